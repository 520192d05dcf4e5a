#pragma once
// One CUTLASS 3.x Hopper GEMM, specialised per operand, accumulator, epilogue and configuration:
//   out (M, N) = epilogue(a (M, K) @ b (N, K)^T)   a row-major, b an nn.Linear weight (K-major)
// built as CUTLASS's own sm90 examples build theirs (49_hopper_gemm_with_collective_builder): the
// CollectiveBuilder picks the TMA + wgmma mainloop of a warp-specialized persistent kernel (cooperative
// or ping-pong, tile and cluster per sm90_config.h), and the epilogue is a visitor tree (EVT) compiled
// for what it does: acc + bias per output feature, then GELU (exact or tanh), nothing, or + the
// residual (C, read by the epilogue's TMA, one rounding into out), the pre-activation stored on the way
// where the backward needs it (aux). No alpha or beta: none of our ops scales its product, and a kernel
// without C has no C term.
#include <cuda_runtime.h>

#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/numeric_conversion.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "gemm/gelu_poly.h"
#include "gemm/gemm_path.h"
#include "gemm/sm90/gemm_sm90.h"

namespace vitfast::gemm::sm90 {

// GELU of the fp32 value v for an output of type Out. Exact (erf): gelu_poly.h's where Out has at most
// 16 bits (its error is far below their last place), erff for a float32 output. Or the tanh form on
// tanh.approx.f32 (max relative error 2^-10.99, PTX ISA): only where a model asks for approximate="tanh"
// (nn.GELU()'s default stays exact).
template <bool kTanh, class Out>
CUTLASS_HOST_DEVICE float gelu(float v) {
  if constexpr (kTanh) {
    const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
#if defined(__CUDA_ARCH__)
    float t;
    asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(u));
#else
    const float t = tanhf(u);
#endif
    return 0.5f * v * (1.f + t);
  } else if constexpr (sizeof(Out) <= 2) {
    return gelu_poly(v);
  } else {
    return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
  }
}

// v rounded to Round and widened back (the operand dtype where the op's reference rounds:
// F.gelu(F.linear(x)) rounds the linear's output first; float: no rounding), a fragment at a time: CUTLASS's
// array converters round two values per instruction (cvt.rn.bf16x2.f32), where one at a time takes a
// quarter-rate F2F each.
template <class Round, int N>
CUTLASS_HOST_DEVICE cutlass::Array<float, N> rounded(cutlass::Array<float, N> const& v) {
  if constexpr (std::is_same_v<Round, float>) {
    return v;
  } else {
    return cutlass::NumericArrayConverter<float, Round, N>{}(cutlass::NumericArrayConverter<Round, float, N>{}(v));
  }
}

// gelu as CUTLASS's epilogue nodes call an activation: on a value or on a fragment, after the rounding.
template <bool kTanh, class Round, class Out>
struct Gelu {
  template <class T>
  struct Fn {
    CUTLASS_HOST_DEVICE float operator()(float v) const { return gelu<kTanh, Out>(float(Round(v))); }
  };
  template <int N>
  struct Fn<cutlass::Array<float, N>> {
    CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(cutlass::Array<float, N> const& v) const {
      const cutlass::Array<float, N> r = rounded<Round>(v);
      cutlass::Array<float, N> out;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < N; ++i) out[i] = gelu<kTanh, Out>(r[i]);
      return out;
    }
  };
};

// The epilogue trees (children before the node that combines them, as CUTLASS's Sm90EVT nests them).
namespace tree {
using namespace cute;
using cutlass::epilogue::fusion::Sm90AccFetch;
using cutlass::epilogue::fusion::Sm90Compute;
using cutlass::epilogue::fusion::Sm90EVT;
using cutlass::epilogue::fusion::Sm90RowBroadcast;
using cutlass::epilogue::fusion::Sm90SrcFetch;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// (N) bias values of type Bias (fp32, or the operands' dtype, widened exactly) in 16-byte vectors; null: 0
template <class Bias, class TileShape>
using PerFeature = Sm90RowBroadcast<0, TileShape, Bias, float, Stride<_0, _1, int64_t>, 16 / sizeof(Bias)>;

// V(acc + bias[n])
template <class V, class Bias, class TileShape>
using PlusBias = Sm90EVT<Sm90Compute<cutlass::plus, V, float, kRound>, Sm90AccFetch, PerFeature<Bias, TileShape>>;

// out for epilogue kEpi (gemm_params.h's kNone, kGeluErf, kGeluTanh, kResidual), GELU after rounding to Round.
template <int kEpi, class Round, class Out, class Bias, class TileShape>
struct Of {
  using type = PlusBias<Out, Bias, TileShape>;  // kNone: one add, one rounding
};
template <class Round, class Out, class Bias, class TileShape>
struct Of<kGeluErf, Round, Out, Bias, TileShape> {
  using type =
      Sm90EVT<Sm90Compute<Gelu<false, Round, Out>::template Fn, Out, float, kRound>, PlusBias<float, Bias, TileShape>>;
};
template <class Round, class Out, class Bias, class TileShape>
struct Of<kGeluTanh, Round, Out, Bias, TileShape> {
  using type =
      Sm90EVT<Sm90Compute<Gelu<true, Round, Out>::template Fn, Out, float, kRound>, PlusBias<float, Bias, TileShape>>;
};
template <class Round, class Out, class Bias, class TileShape>
struct Of<kResidual, Round, Out, Bias, TileShape> {  // (acc + bias[n]) + C, one rounding into out
  using type =
      Sm90EVT<Sm90Compute<cutlass::plus, Out, float, kRound>, PlusBias<float, Bias, TileShape>, Sm90SrcFetch<Out>>;
};

// linear_gelu with the pre-activation stored for the backward: V = acc + bias[n] stored (rounded to the
// operand dtype) by an aux TMA store, then GELU. An operation of our own (CUTLASS's LinCombPerColBias-
// EltActAux with its alpha and beta dropped): the aux store's shared-memory layout comes from the
// epilogue builder, so the tree is written where the builder instantiates it (FusionCallbacks below).
// The bias is read in Aux's dtype (the operands').
template <bool kTanh, class Round, class Out, class Aux>
struct BiasGeluAux : cutlass::epilogue::fusion::LinCombPerColBiasEltActAux<
                         cutlass::layout::RowMajor, Gelu<kTanh, Round, Out>::template Fn, Out, float, Aux, Aux, Out,
                         float> {};

template <bool kTanh, class Round, class Out, class Aux, int kStages, class TileShape, class EpilogueTile,
          class SmemLayoutAtom, class CopyOpR2S>
using GeluAux = Sm90EVT<
    Sm90Compute<Gelu<kTanh, Round, Out>::template Fn, Out, float, kRound>,
    Sm90EVT<cutlass::epilogue::fusion::Sm90AuxStore<kStages, EpilogueTile, Aux, kRound, Stride<int64_t, _1, int64_t>,
                                                    SmemLayoutAtom, CopyOpR2S, 128 / sizeof_bits_v<Aux>>,
            PlusBias<float, Aux, TileShape>>>;
}  // namespace tree

// A configuration's CUTLASS types (sm90_config.h says what each is for). The epilogue stores the tile
// in pieces of EpilogueTile (Auto: CUTLASS's choice, 64x32 for ping-pong's 16-bit outputs).
template <int kTileM, int kTileN, int kClusterM, bool kPingpong,
          class EpiTile = cutlass::epilogue::collective::EpilogueTileAuto>
struct Schedule {
  using TileShape = cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>, cute::_64>;
  using ClusterShape = cute::Shape<cute::Int<kClusterM>, cute::_1, cute::_1>;
  using Mainloop = std::conditional_t<kPingpong, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                      cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
  using Epilogue = std::conditional_t<kPingpong, cutlass::epilogue::TmaWarpSpecialized,
                                      cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using EpilogueTile = EpiTile;
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
template <>
struct ScheduleOf<Sm90Config::kPingpong128x128C2E64>
    : Schedule<128, 128, 2, true, cute::Shape<cute::_64, cute::_64>> {};
template <>
struct ScheduleOf<Sm90Config::kPingpong128x128C2E128>
    : Schedule<128, 128, 2, true, cute::Shape<cute::_64, cute::_128>> {};
template <>
struct ScheduleOf<Sm90Config::kCoop128x128E128x64>
    : Schedule<128, 128, 1, false, cute::Shape<cute::_128, cute::_64>> {};
template <>
struct ScheduleOf<Sm90Config::kPingpong128x128C2FastAccum>
    : Schedule<128, 128, 2, true, cute::Shape<cute::_64, cute::_128>> {
  using Mainloop = cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum;  // FP8 operands only
};

// linear_gelu's kinds round the pre-activation to the operand dtype before GELU; lp_matmul's do not.
constexpr bool sm90_kind_rounds(Sm90Kind k) {
  return k == Sm90Kind::kAct || k == Sm90Kind::kActTanh || k == Sm90Kind::kActAux || k == Sm90Kind::kActAuxTanh;
}

// linear_gelu's and linear_residual's kinds read the bias in the operand dtype, as the model holds it (no
// float32 copy per call); lp_matmul's take any float bias, so theirs is float32.
constexpr bool sm90_kind_bias_f32(Sm90Kind k) {
  return !(sm90_kind_rounds(k) || k == Sm90Kind::kResidual || k == Sm90Kind::kResidualF32);
}

template <class Operand, class Accumulator, Sm90Kind kKind, int kEpi, class Out, Sm90Config kConfig>
struct Kernel {
  static constexpr bool kWithC = sm90_kind_residual(kKind);
  static constexpr bool kAux = kKind == Sm90Kind::kActAux || kKind == Sm90Kind::kActAuxTanh;
  static_assert(kWithC == (kEpi == gemm::kResidual), "a residual kind takes the residual epilogue, and only it");
  static_assert(!kAux || kEpi == kGeluErf || kEpi == kGeluTanh, "the pre-activation is stored for GELU only");
  using S = ScheduleOf<kConfig>;
  static constexpr int kAlign = 8;  // 16 bytes of fp16 / bf16: TMA's row alignment
  static constexpr int kAlignOut = 16 / sizeof(Out);
  using Row = cutlass::layout::RowMajor;
  using ElementC = std::conditional_t<kWithC, Out, void>;  // the residual, in out's dtype
  using Round = std::conditional_t<sm90_kind_rounds(kKind), Operand, float>;
  using Bias = std::conditional_t<sm90_kind_bias_f32(kKind), float, Operand>;
  static_assert(!kAux || std::is_same_v<Bias, Operand>, "BiasGeluAux reads the bias in the operand dtype");
  using FusionOp = std::conditional_t<kAux, tree::BiasGeluAux<kEpi == kGeluTanh, Round, Out, Operand>,
                                      typename tree::Of<kEpi, Round, Out, Bias, typename S::TileShape>::type>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename S::TileShape, typename S::ClusterShape,
      typename S::EpilogueTile, Accumulator, float, ElementC, Row, kAlignOut, Out, Row, kAlignOut,
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
template <class Operand, class Accumulator, Sm90Kind kKind, int kEpi, class Out, Sm90Config kConfig>
int launch(const GemmParams& p, int sms, cudaStream_t stream) {
  using K = Kernel<Operand, Accumulator, kKind, kEpi, Out, kConfig>;
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
  using Bias = typename K::Bias;
  const auto* bias = static_cast<const Bias*>(p.bias);  // null: no bias (the broadcast reads 0)
  if constexpr (K::kAux) {
    fusion.bias_ptr = bias;
    fusion.aux_ptr = static_cast<Operand*>(p.pre);
    fusion.dAux = cutlass::make_cute_packed_stride(decltype(fusion.dAux){}, {M, N, 1});
  } else {
    // tree::Of's arguments nest as its nodes do, each node's children first (AccFetch, then the bias
    // vector), the node's own last.
    using Plus = typename tree::PlusBias<float, Bias, typename K::S::TileShape>::Arguments;
    if constexpr (kEpi == kNone) {
      fusion = {{}, {bias, Bias(0), {}}, {}};
    } else if constexpr (kEpi == kResidual) {
      fusion = {Plus{{}, {bias, Bias(0), {}}, {}}, {}, {}};  // + C
    } else {
      fusion = {Plus{{}, {bias, Bias(0), {}}, {}}, {}};  // GELU
    }
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
  one(std::integral_constant<C, C::kPingpong128x128C2E64>{});
  one(std::integral_constant<C, C::kPingpong128x128C2E128>{});
  one(std::integral_constant<C, C::kCoop128x128E128x64>{});
  one(std::integral_constant<C, C::kPingpong128x128C2FastAccum>{});
  static_assert(static_cast<int>(C::kCount) == 10, "a configuration is missing from dispatch_config()'s list");
  return status;
}

// p through kernel kKind with epilogue kEpi (gemm_params.h's), in the configuration p names.
template <class Operand, class Accumulator, Sm90Kind kKind, int kEpi, class Out = Operand>
int run(const GemmParams& p, cudaStream_t stream) {
  if (sm90_refusal(p, sizeof(Operand)) != nullptr) return kRefused;
  if (p.bias != nullptr && p.bias_f32 != sm90_kind_bias_f32(kKind)) return kBiasDtype;
  return dispatch_config<kKind>(p, [&](auto c, int sms) {
    return launch<Operand, Accumulator, kKind, kEpi, Out, decltype(c)::value>(p, sms, stream);
  });
}

// run for the epilogue p asks for among those built (kNone, kGeluErf, and kGeluTanh where kTanh);
// kEpilogueNotBuilt for another.
template <class Operand, class Accumulator, Sm90Kind kKind, Sm90Kind kTanhKind, bool kNoneBuilt, class Out = Operand>
int run_act(const GemmParams& p, cudaStream_t stream) {
  if (p.epilogue == kGeluErf) return run<Operand, Accumulator, kKind, kGeluErf, Out>(p, stream);
  if constexpr (kTanhKind != kKind) {
    if (p.epilogue == kGeluTanh) return run<Operand, Accumulator, kTanhKind, kGeluTanh, Out>(p, stream);
  }
  if constexpr (kNoneBuilt) {
    if (p.epilogue == kNone) return run<Operand, Accumulator, kKind, kNone, Out>(p, stream);
  }
  return kEpilogueNotBuilt;
}

}  // namespace vitfast::gemm::sm90

namespace cutlass::epilogue::fusion {

// tree::BiasGeluAux's tree: GELU(store(acc + bias[n])), as CUTLASS builds its own aux operations.
template <int StagesC, int StagesD, int FragmentSize, bool ReuseSmemC, bool DelayTmaStore, bool kTanh, class Round,
          class Out, class Aux, class CtaTileShapeMNK, class EpilogueTile, class SmemLayoutAtom, class CopyOpR2S>
struct FusionCallbacks<epilogue::Sm90TmaWarpSpecialized<StagesC, StagesD, FragmentSize, ReuseSmemC, DelayTmaStore>,
                       vitfast::gemm::sm90::tree::BiasGeluAux<kTanh, Round, Out, Aux>, CtaTileShapeMNK, EpilogueTile,
                       SmemLayoutAtom, CopyOpR2S>
    : vitfast::gemm::sm90::tree::GeluAux<kTanh, Round, Out, Aux, StagesD, CtaTileShapeMNK, EpilogueTile, SmemLayoutAtom,
                                         CopyOpR2S> {
  using Impl = vitfast::gemm::sm90::tree::GeluAux<kTanh, Round, Out, Aux, StagesD, CtaTileShapeMNK, EpilogueTile,
                                                  SmemLayoutAtom, CopyOpR2S>;
  using Operation = vitfast::gemm::sm90::tree::BiasGeluAux<kTanh, Round, Out, Aux>;

  struct Arguments {
    const Aux* bias_ptr = nullptr;  // null: no bias; in the operands' dtype
    Aux* aux_ptr = nullptr;
    cute::Stride<int64_t, cute::_1, int64_t> dAux = {};
    operator typename Impl::Arguments() const {
      return {{{{}, {bias_ptr, Aux(0), {}}, {}}, {aux_ptr, dAux}}, {}};  // children first: acc + bias, the store, GELU
    }
  };
  using Impl::Impl;
};

}  // namespace cutlass::epilogue::fusion
