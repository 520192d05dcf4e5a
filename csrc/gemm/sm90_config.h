#pragma once
// The Hopper GEMM's configurations (tile, cluster, schedule) and which of them this build holds for
// each kind of kernel. Plain C++17: gemm_path.h (host, CPU builds too) and the sm90 .cu files (nvcc,
// no torch headers) include it, so the kernels instantiated and the choices offered cannot disagree.
//   cooperative: two consumer warpgroups share one tile's rows; the tensor cores idle while the tile's
//                epilogue runs. ping-pong: each consumer warpgroup owns a tile, one's epilogue overlaps
//                the other's mainloop (CUTLASS's choice for costly epilogues such as GELU).
//   a 2x1 cluster: two CTAs on neighbouring M tiles share each B (weight) tile by TMA multicast.
#include <cstdint>

namespace vitfast::gemm {

enum class Sm90Config : int {
  kAuto = 0,             // default_sm90_config()'s choice for the shape
  kCoop128x128,          // the general tile
  kPingpong128x128C2,    // GELU epilogues: the epilogue hidden behind the other warpgroup's mainloop
  kCoop128x256C2,        // wide N (a multiple of 256) without GELU: half the A traffic per FLOP
  kCoop128x192,          // N in {192, 576, ...}: 128-wide tiles would leave part of the last one idle
  kPingpong64x128,       // small M: twice as many tiles as 128-row ones, to fill the SMs
  kCount
};

inline constexpr const char* kSm90ConfigNames[] = {"auto",         "coop_128x128",   "pingpong_128x128_2x1",
                                                   "coop_128x256_2x1", "coop_128x192", "pingpong_64x128"};

// The kernels, by epilogue fusion and output: bf16 or fp16 operands with fp32 accumulators for the
// first four; FP16_16 (fp16 accumulators) and FP16_32 into float32 for the next three; e4m3 operands
// (fp8_linear: scales, bias, then GELU into bf16 or e4m3, or the residual into bf16) for the last three.
enum class Sm90Kind : int {
  kAct, kActAux, kResidual, kResidualF32, kFp16AccAct, kFp16AccResidual, kFp32Output,
  kFp8Act, kFp8ActE4m3, kFp8Residual
};

inline constexpr const char* kSm90KindKeys[] = {"act",          "act_aux",           "residual",    "residual_f32",
                                                "fp16_acc_act", "fp16_acc_residual", "fp32_output", "fp8_act",
                                                "fp8_act_e4m3", "fp8_residual"};

constexpr const char* sm90_kind_name(Sm90Kind k) {
  constexpr const char* names[] = {"GELU or no epilogue",
                                   "GELU storing the pre-activation",
                                   "the residual epilogue",
                                   "the residual epilogue into float32",
                                   "fp16 accumulation (FP16_16)",
                                   "fp16 accumulation (FP16_16) with the residual",
                                   "float32 outputs (FP16_32)",
                                   "FP8 products into bf16",
                                   "FP8 products into e4m3",
                                   "FP8 products with the residual"};
  return names[static_cast<int>(k)];
}

constexpr bool sm90_kind_residual(Sm90Kind k) {
  return k == Sm90Kind::kResidual || k == Sm90Kind::kResidualF32 || k == Sm90Kind::kFp16AccResidual ||
         k == Sm90Kind::kFp8Residual;
}

// Which configurations are built per kind (each one is ~25 s of cicc per operand dtype on the build
// machine, so only those a ViT shape class needs).
constexpr bool sm90_config_built(Sm90Kind kind, Sm90Config c) {
  switch (kind) {
    case Sm90Kind::kAct:  // fc1 + GELU, and "none" (lp_matmul FP16_32 into fp16)
      return c != Sm90Config::kAuto && c != Sm90Config::kCount;
    case Sm90Kind::kActAux:  // fc1 + GELU in training: large M
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kPingpong128x128C2;
    case Sm90Kind::kResidual:  // fc2 / proj + residual
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kCoop128x256C2 || c == Sm90Config::kCoop128x192 ||
             c == Sm90Config::kPingpong64x128;
    case Sm90Kind::kResidualF32:  // the fp32 residual stream of autocast training: large M
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kCoop128x256C2 || c == Sm90Config::kCoop128x192;
    case Sm90Kind::kFp8Act:       // qkv into bf16
    case Sm90Kind::kFp8ActE4m3:   // fc1 + GELU into fc2's e4m3 input
    case Sm90Kind::kFp8Residual:  // proj / fc2 + residual
      // The FP8 mainloop holds two accumulator sets (the wgmma's and the fp32 sums it is added to each
      // k-tile): a warpgroup tile of 128x128 (ping-pong) or 64x256 needs 256 registers for them alone
      // and spilled (ptxas: 272 bytes of stack); 64x128 per warpgroup fits.
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kPingpong64x128;
    default:
      return c == Sm90Config::kCoop128x128;
  }
}

// The configuration for `kAuto`: a prediction from the tile arithmetic, until a GPU run's dispatch data
// names the measured best (which the model backend passes instead).
constexpr Sm90Config default_sm90_config(Sm90Kind kind, int64_t M, int64_t N, bool gelu, int sms) {
  auto built = [kind](Sm90Config c) { return sm90_config_built(kind, c); };
  const int64_t tiles = ((M + 127) / 128) * ((N + 127) / 128);
  if (tiles < sms && built(Sm90Config::kPingpong64x128)) return Sm90Config::kPingpong64x128;
  if (gelu && built(Sm90Config::kPingpong128x128C2)) return Sm90Config::kPingpong128x128C2;
  // FP8 + GELU: erff on each output costs about as long as the 768-deep FP8 mainloop of its tile, so the
  // ping-pong kernel's overlap matters more than the tile's width (128x128 ping-pong spills in FP8).
  if (gelu && built(Sm90Config::kPingpong64x128)) return Sm90Config::kPingpong64x128;
  if (!gelu && N % 256 == 0 && built(Sm90Config::kCoop128x256C2)) return Sm90Config::kCoop128x256C2;
  if (!gelu && N % 128 != 0 && N % 192 == 0 && built(Sm90Config::kCoop128x192)) return Sm90Config::kCoop128x192;
  return Sm90Config::kCoop128x128;
}

}  // namespace vitfast::gemm
