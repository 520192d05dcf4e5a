#pragma once
// One CUTLASS 3.x Hopper GEMM, specialised per operand, accumulator, epilogue fusion and configuration:
//   out (M, N) = epilogue(a (M, K) @ b (N, K)^T)   a row-major, b an nn.Linear weight (K-major)
// built as CUTLASS's own sm90 examples build theirs (49_hopper_gemm_with_collective_builder): the
// CollectiveBuilder picks the TMA + wgmma mainloop of a warp-specialized persistent kernel (cooperative
// or ping-pong, tile and cluster per sm90_config.h), and the epilogue is one of CUTLASS's fusion
// operations, which the epilogue builder turns into a visitor tree (EVT): + bias per output feature,
// then our activation, or + residual (C, read by the epilogue's TMA, one rounding into out). The
// pre-activation can be stored on the way (aux).
#include <cuda_runtime.h>

#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "gemm/gemm_path.h"
#include "gemm/sm90/gemm_sm90.h"

namespace vitfast::gemm::sm90 {

// The epilogue's activation on the fp32 value acc + bias. Its mode is a kernel argument, so one
// kernel serves GELU erf, GELU tanh and none; GELU reads the value rounded to the operand dtype where
// the op's reference does (F.gelu(F.linear(x)) rounds the linear's output first).
template <class T>
struct Activation;

template <>
struct Activation<float> {
  struct Arguments {
    int gelu = 0;   // 0 none, 1 erf, 2 tanh (gemm_params.h's kNone / kGeluErf / kGeluTanh)
    int round = 0;  // 0 none, 1 to fp16, 2 to bf16, before GELU
  };
  CUTLASS_HOST_DEVICE float operator()(float v, Arguments const& a) const {
    if (a.round == 1) v = float(cutlass::half_t(v));
    if (a.round == 2) v = float(cutlass::bfloat16_t(v));
    if (a.gelu == 1) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    if (a.gelu == 2) return 0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    return v;
  }
};

template <int N>
struct Activation<cutlass::Array<float, N>> {
  using Arguments = Activation<float>::Arguments;
  CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(cutlass::Array<float, N> const& v, Arguments const& a) const {
    cutlass::Array<float, N> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = Activation<float>{}(v[i], a);
    return out;
  }
};

// A configuration's CUTLASS types (sm90_config.h says what each is for).
template <int kTileM, int kTileN, int kClusterM, bool kPingpong>
struct Schedule {
  using TileShape = cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>, cute::_64>;
  using ClusterShape = cute::Shape<cute::Int<kClusterM>, cute::_1, cute::_1>;
  using Mainloop = std::conditional_t<kPingpong, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                      cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
  using Epilogue = std::conditional_t<kPingpong, cutlass::epilogue::TmaWarpSpecialized,
                                      cutlass::epilogue::TmaWarpSpecializedCooperative>;
};

template <Sm90Config kConfig>
struct ScheduleOf;
template <>
struct ScheduleOf<Sm90Config::kCoop128x128> : Schedule<128, 128, 1, false> {};
template <>
struct ScheduleOf<Sm90Config::kPingpong128x128C2> : Schedule<128, 128, 2, true> {};
template <>
struct ScheduleOf<Sm90Config::kCoop128x256C2> : Schedule<128, 256, 2, false> {};
template <>
struct ScheduleOf<Sm90Config::kCoop128x192> : Schedule<128, 192, 1, false> {};
template <>
struct ScheduleOf<Sm90Config::kPingpong64x128> : Schedule<64, 128, 1, true> {};

template <class Operand, class Accumulator, Sm90Kind kKind, class Out, Sm90Config kConfig>
struct Kernel {
  static constexpr bool kResidual = sm90_kind_residual(kKind);
  using S = ScheduleOf<kConfig>;
  static constexpr int kAlign = 8;  // 16 bytes of fp16 / bf16: TMA's row alignment
  static constexpr int kAlignOut = 16 / sizeof(Out);
  using Row = cutlass::layout::RowMajor;
  using ElementC = std::conditional_t<kResidual, Out, void>;  // the residual, in out's dtype
  using FusionOp = std::conditional_t<
      kResidual, cutlass::epilogue::fusion::LinCombPerColBias<Out, float, float, Out, float>,
      std::conditional_t<kKind != Sm90Kind::kActAux,
                         cutlass::epilogue::fusion::LinCombPerColBiasEltAct<Activation, Out, float, float, Out, float>,
                         cutlass::epilogue::fusion::LinCombPerColBiasEltActAux<Row, Activation, Out, float, Operand,
                                                                              float, Out, float>>>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename S::TileShape, typename S::ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, Accumulator, float, ElementC, Row, kAlignOut, Out, Row, kAlignOut,
      typename S::Epilogue, FusionOp>::CollectiveOp;
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Operand, Row, kAlign, Operand, cutlass::layout::ColumnMajor,
      kAlign, Accumulator, typename S::TileShape, typename S::ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename S::Mainloop>::CollectiveOp;
  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue>;  // persistent tile scheduler
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

inline int sm_count() {
  int device = 0;
  cudaGetDevice(&device);
  return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
}

// A CUTLASS device adapter's launch of args, as a Status: none of our kernels takes a workspace.
template <class Gemm>
int run_adapter(const typename Gemm::Arguments& args, cudaStream_t stream) {
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return kCannotImplement;
  if (Gemm::get_workspace_size(args) != 0) return kNeedsWorkspace;
  if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return kCannotImplement;
  return gemm.run(stream) == cutlass::Status::kSuccess ? kOk : kLaunchFailed;
}

// One configuration's launch. The tensors passed gemm_path.h's sm90_refusal (run), and the launcher
// (gemm_cuda.cpp) reported any error pending from earlier work, so a failure here is this launch's own.
template <class Operand, class Accumulator, Sm90Kind kKind, class Out, Sm90Config kConfig>
int launch(const GemmParams& p, int sms, cudaStream_t stream) {
  using K = Kernel<Operand, Accumulator, kKind, Out, kConfig>;
  using Gemm = typename K::Gemm;
  using GK = typename Gemm::GemmKernel;
  const int M = static_cast<int>(p.M), N = p.N, Kd = p.K;
  const auto* a = static_cast<const Operand*>(p.a);
  const auto* b = static_cast<const Operand*>(p.b);
  const auto* c = static_cast<const typename K::ElementC*>(p.residual);
  auto* d = static_cast<Out*>(p.out);
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {M, N, Kd, 1},
      {a, cutlass::make_cute_packed_stride(typename GK::StrideA{}, {M, Kd, 1}), b,
       cutlass::make_cute_packed_stride(typename GK::StrideB{}, {N, Kd, 1})},
      {{}, c, cutlass::make_cute_packed_stride(typename GK::StrideC{}, {M, N, 1}), d,
       cutlass::make_cute_packed_stride(typename GK::StrideD{}, {M, N, 1})}};
  args.hw_info.sm_count = sms;
  auto& fusion = args.epilogue.thread;
  fusion.alpha = 1.f;
  fusion.beta = K::kResidual ? 1.f : 0.f;
  fusion.bias_ptr = p.bias;  // null: no bias (the broadcast reads 0)
  if constexpr (!K::kResidual) {
    fusion.activation.gelu = p.epilogue == kGeluErf ? 1 : p.epilogue == kGeluTanh ? 2 : 0;
    fusion.activation.round = !p.round_pre ? 0 : std::is_same_v<Operand, cutlass::bfloat16_t> ? 2 : 1;
  }
  if constexpr (kKind == Sm90Kind::kActAux) {
    fusion.aux_ptr = static_cast<Operand*>(p.pre);
    fusion.dAux = cutlass::make_cute_packed_stride(decltype(fusion.dAux){}, {M, N, 1});
  }
  return run_adapter<Gemm>(args, stream);
}

// launch_one(std::integral_constant<Sm90Config, C>, sms) for the configuration p names (kAuto:
// default_sm90_config's), among those sm90_config.h builds for kKind; kNotBuilt for any other.
template <Sm90Kind kKind, class LaunchOne>
int dispatch_config(const GemmParams& p, LaunchOne&& launch_one) {
  static const int sms = sm_count();
  Sm90Config config = static_cast<Sm90Config>(p.config);
  if (config == Sm90Config::kAuto) {
    config = default_sm90_config(kKind, p.M, p.N, p.epilogue == kGeluErf || p.epilogue == kGeluTanh, sms);
  }
  int status = kNotBuilt;
  auto one = [&](auto c) {
    if constexpr (sm90_config_built(kKind, decltype(c)::value)) {
      if (config == decltype(c)::value) status = launch_one(c, sms);
    }
  };
  using C = Sm90Config;
  one(std::integral_constant<C, C::kCoop128x128>{});
  one(std::integral_constant<C, C::kPingpong128x128C2>{});
  one(std::integral_constant<C, C::kCoop128x256C2>{});
  one(std::integral_constant<C, C::kCoop128x192>{});
  one(std::integral_constant<C, C::kPingpong64x128>{});
  static_assert(static_cast<int>(C::kCount) == 6, "a configuration is missing from dispatch_config()'s list");
  return status;
}

template <class Operand, class Accumulator, Sm90Kind kKind, class Out = Operand>
int run(const GemmParams& p, cudaStream_t stream) {
  if (sm90_refusal(p, sizeof(Operand)) != nullptr) return kRefused;
  return dispatch_config<kKind>(p, [&](auto c, int sms) {
    return launch<Operand, Accumulator, kKind, Out, decltype(c)::value>(p, sms, stream);
  });
}

}  // namespace vitfast::gemm::sm90
