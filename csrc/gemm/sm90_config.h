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
  kCoop128x256C2,        // wide N (a multiple of 256): half the A traffic per FLOP, the weight multicast
  kCoop128x192,          // N in {192, 576, ...}: 128-wide tiles would leave part of the last one idle
  kPingpong64x128,       // small M: twice as many tiles as 128-row ones, to fill the SMs
  kPingpong128x128C2E64,  // GELU: ping-pong 128x128 (2x1) storing each tile in 64x64 pieces, half as many
                          // as CUTLASS's 64x32 (each a wait on the store two pieces back and two barriers)
  kPingpong128x128C2E128, // the same in 64x128 pieces: a warpgroup's tile in two stores, no wait
  kCoop128x128E128x64,    // FP8: the general tile storing in 128x64 pieces, half as many as CUTLASS's 128x32
  kPingpong128x128C2FastAccum,  // FP8: ping-pong 128x128 (2x1) in 64x128 pieces, the product summed on the
                                // tensor cores over the whole K (no promotion): its epilogue under the
                                // other warpgroup's mainloop, which the promoted mainloop cannot fit
  kCount
};

inline constexpr const char* kSm90ConfigNames[] = {"auto",         "coop_128x128",   "pingpong_128x128_2x1",
                                                   "coop_128x256_2x1", "coop_128x192", "pingpong_64x128",
                                                   "pingpong_128x128_2x1_epi64x64",
                                                   "pingpong_128x128_2x1_epi64x128", "coop_128x128_epi128x64",
                                                   "pingpong_128x128_2x1_fastaccum"};

// The kernels, by epilogue and output. The epilogue is compiled in (gemm_sm90.cuh): + bias, then exact
// (erf) GELU, tanh GELU (tanh.approx, only where a model asks for approximate="tanh"), nothing, or + the
// residual (C). bf16 or fp16 operands with fp32 accumulators for linear_gelu (GELU of the pre-activation
// rounded to the operand dtype, as F.gelu(F.linear(x)); "aux": the pre-activation stored for the
// backward) and linear_residual; lp_matmul's FP16_16 (fp16 accumulators) and FP16_32 (fp32 accumulators,
// into fp16 or float32) with no activation or exact GELU (tanh GELU and FP16_32's residual into fp16:
// the mma.sync kernel / linear_residual's); e4m3 operands (fp8_linear: the weight's scales with x's
// folded in, bias, then nothing into bf16 (qkv), GELU into e4m3 (fc1), or the residual into bf16).
enum class Sm90Kind : int {
  kAct, kActTanh, kActAux, kActAuxTanh, kResidual, kResidualF32,
  kFp16AccAct, kFp16AccResidual, kFp32AccAct, kFp32Output,
  kFp8Act, kFp8ActE4m3, kFp8ActE4m3Tanh, kFp8Residual
};

inline constexpr const char* kSm90KindKeys[] = {
    "act",          "act_tanh",          "act_aux",      "act_aux_tanh", "residual", "residual_f32", "fp16_acc_act",
    "fp16_acc_residual", "fp32_acc_act", "fp32_output", "fp8_act",      "fp8_act_e4m3", "fp8_act_e4m3_tanh",
    "fp8_residual"};

constexpr const char* sm90_kind_name(Sm90Kind k) {
  constexpr const char* names[] = {"GELU",
                                   "tanh GELU",
                                   "GELU storing the pre-activation",
                                   "tanh GELU storing the pre-activation",
                                   "the residual epilogue",
                                   "the residual epilogue into float32",
                                   "fp16 accumulation (FP16_16)",
                                   "fp16 accumulation (FP16_16) with the residual",
                                   "fp32 accumulation into fp16 (FP16_32)",
                                   "float32 outputs (FP16_32)",
                                   "FP8 products into bf16",
                                   "FP8 products with GELU into e4m3",
                                   "FP8 products with tanh GELU into e4m3",
                                   "FP8 products with the residual"};
  return names[static_cast<int>(k)];
}

constexpr bool sm90_kind_residual(Sm90Kind k) {
  return k == Sm90Kind::kResidual || k == Sm90Kind::kResidualF32 || k == Sm90Kind::kFp16AccResidual ||
         k == Sm90Kind::kFp8Residual;
}

// The kind of linear_gelu's kernel: tanh or exact GELU, with or without the stored pre-activation.
constexpr Sm90Kind sm90_gelu_kind(bool tanh, bool aux) {
  return aux ? (tanh ? Sm90Kind::kActAuxTanh : Sm90Kind::kActAux) : (tanh ? Sm90Kind::kActTanh : Sm90Kind::kAct);
}

// Which configurations are built per kind: each is ~25 s of cicc per operand dtype on the build machine,
// so only those the dispatch can choose for a ViT shape class. For GELU the H200 measured ping-pong
// 128x128 on a 2x1 cluster best at ViT-B and L, in about the same time per tile whatever K (5.4, 5.4, 6.2
// and 7.0 us at K = 192, 384, 768 and 1,024): a warpgroup's epilogue takes 8-10 us where its mainloop
// takes 1-6, so the tile's store, not its product, sets the pace (csrc/gemm/NOTES.md, issue 96). The
// candidates store it in fewer, larger pieces (inference both; training's kernel, whose stored
// pre-activation doubles the pieces' shared memory, the 64x128 one, at 5 mainloop stages instead of 6);
// ping-pong 64x256, which never won a shape, gave its place to them.
constexpr bool sm90_config_built(Sm90Kind kind, Sm90Config c) {
  switch (kind) {
    case Sm90Kind::kAct:  // fc1 + GELU
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kCoop128x256C2 || c == Sm90Config::kCoop128x192 ||
             c == Sm90Config::kPingpong128x128C2 || c == Sm90Config::kPingpong64x128 ||
             c == Sm90Config::kPingpong128x128C2E64 || c == Sm90Config::kPingpong128x128C2E128;
    case Sm90Kind::kActAux:  // fc1 + GELU in training: large M
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kCoop128x256C2 || c == Sm90Config::kPingpong128x128C2 ||
             c == Sm90Config::kPingpong128x128C2E128;
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
      // and spilled (ptxas: 272 bytes of stack); 64x128 per warpgroup fits. At K = 768 the cooperative
      // tile's epilogue is most of its time (4.2-5.5 us a tile against ~2 for the product at FP8's rate),
      // so fc1 and qkv have a candidate storing in half as many pieces.
      // Ping-pong 128x128, whose epilogue would hide under the other warpgroup's mainloop, fits only
      // CUTLASS's fast-accumulation mainloop (one fragment, no promotion: 168 registers, no spills):
      // built for qkv and fc1, whose K is the model's width (192-1,024), not fc2's 4x that, as
      // Transformer Engine runs its forward GEMMs (no split accumulator in fprop); its error bound is
      // K / 32 wgmma's instead of kFp8PromotionInterval's (fp8_promotion_interval below).
      return c == Sm90Config::kCoop128x128 || c == Sm90Config::kPingpong64x128 ||
             ((c == Sm90Config::kCoop128x128E128x64 || c == Sm90Config::kPingpong128x128C2FastAccum) &&
              kind != Sm90Kind::kFp8Residual);
    default:  // tanh GELU (only where a model asks for it) and lp_matmul's: the general tile
      return c == Sm90Config::kCoop128x128;
  }
}

// The configuration for `kAuto`: the H100 tables' best where they measured the kind (2026-11-24:
// cooperative tiles for GELU, 128x192 where N is a multiple of 192), else a prediction from the tile
// arithmetic, until a GPU run's dispatch data names the measured best (which the model backend passes).
constexpr Sm90Config default_sm90_config(Sm90Kind kind, int64_t M, int64_t N, bool gelu, int sms) {
  auto built = [kind](Sm90Config c) { return sm90_config_built(kind, c); };
  const int64_t tiles = ((M + 127) / 128) * ((N + 127) / 128);
  if (tiles < sms && built(Sm90Config::kPingpong64x128)) return Sm90Config::kPingpong64x128;
  if (N % 256 == 0 && !gelu && built(Sm90Config::kCoop128x256C2)) return Sm90Config::kCoop128x256C2;
  if (N % 192 == 0 && (gelu || N % 128 != 0) && built(Sm90Config::kCoop128x192)) return Sm90Config::kCoop128x192;
  return Sm90Config::kCoop128x128;
}

// fp8_linear's FP8 wgmma instructions (k = 32) between promotions of their accumulator into fp32 (the
// mainloop's mma_promotion_interval): one 128-deep k-tile. Hopper's FP8 tensor cores keep fewer bits
// than fp32 in the accumulator, so the error of a product grows with the products summed between
// promotions; vitfast/ops/fp8_linear.py's fp8_accumulation_bound derives its bound from this value.
constexpr int kFp8PromotionInterval = 4;

// Whether configuration c sums the whole K on the FP8 tensor cores (no promotion into fp32).
constexpr bool sm90_config_fast_accum(Sm90Config c) { return c == Sm90Config::kPingpong128x128C2FastAccum; }

// The FP8 wgmma instructions summed on the tensor cores before a promotion, for configuration c at depth K.
constexpr int64_t fp8_promotion_interval(Sm90Config c, int64_t K) {
  return sm90_config_fast_accum(c) ? (K + 31) / 32 : kFp8PromotionInterval;
}

}  // namespace vitfast::gemm
