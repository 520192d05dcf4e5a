#pragma once
// fp8_linear's Hopper GEMMs: e4m3 operands, fp32 accumulation (CUTLASS's FP8 mainloop, which adds the
// tensor cores' partial sums into fp32 registers every kFp8PromotionInterval wgmma instructions: the
// wgmma FP8 accumulator alone keeps fewer mantissa bits than fp32), and an epilogue visitor tree of our
// own, compiled for what it does:
//
//   v   = acc * scale[n] + bias[n]         scale = x's scale * the weight's per feature (the launcher
//                                          folds them: one FMA per element)
//   qkv: out = bf16(v)                     no activation node
//   fc1: out = e4m3(gelu(v) * out_scale_inv)   exact or tanh GELU; rounded to nearest even, saturated
//                                          (cvt.rn.satfinite)
//   residual: out = bf16(v + residual)
//   amax = max |out's value before rounding|, NaN if any is NaN: on request (p.amax not null)
//
// The schedules and configurations are gemm_sm90.cuh's, with a 128-deep k-tile (128 bytes of e4m3 per
// row: the 128-byte swizzle, as 64 bf16 are for the 16-bit kernels); the mainloop is CUTLASS's FP8
// collective with its promotions overlapped with the next k-tile's wgmma (fp8_mainloop.cuh), or, for
// the fast-accumulation configuration (sm90_config.h), CUTLASS's plain one, with no promotion.
// The amax reduction's initial value is written by the launcher (fp8_linear_cuda.cpp: a zeroed tensor):
// CUTLASS's own fill calls the driver API (cuMemsetD32Async), which the extension does not link.
#define CUTLASS_SKIP_REDUCTION_INIT
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "gemm/sm90/fp8_mainloop.cuh"
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

namespace fp8 {
using namespace tree;  // the nodes, kRound and PerFeature of the 16-bit kernels' trees
using cutlass::epilogue::fusion::Sm90ScalarBroadcast;

template <class T>
using AbsMaxPropagatingNaN = cutlass::maximum_absolute_value_reduction<T, true>;

// max |x| over the output, as CUTLASS's Sm90ScalarReduction computes it per thread, but reduced across
// the warp before the atomic: one atomic per warp and tile instead of one per thread (CUTLASS's node
// sends 256 same-address atomics per tile: ~2.4 M for one ViT-B fc1 at batch 256). A null pointer
// skips it all (the node passes its input through).
struct Amax : cutlass::epilogue::fusion::Sm90ScalarReduction<AbsMaxPropagatingNaN, cutlass::atomic_maximum, float,
                                                            float, kRound> {
  using Base = cutlass::epilogue::fusion::Sm90ScalarReduction<AbsMaxPropagatingNaN, cutlass::atomic_maximum, float,
                                                              float, kRound>;
  using Base::Base;

  template <class Callbacks>
  struct WarpReduced : Callbacks {
    using Callbacks::Callbacks;
    CUTLASS_DEVICE void end() {
      if (this->params.ptr_scalar == nullptr) return;
      float m = this->scalar;
      CUTLASS_PRAGMA_UNROLL
      for (int lane_mask = 16; lane_mask > 0; lane_mask >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, m, lane_mask);
        m = (o != o || o > m) ? o : m;  // NaN wins, as in the per-thread reduction
      }
      if (threadIdx.x % 32 == 0) cutlass::atomic_maximum<float>{}(this->params.ptr_scalar, m);
    }
  };

  template <bool kReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::ConsumerStoreArgs<Args...> const& args) {
    using Callbacks = typename Base::template ConsumerStoreCallbacks<decltype(args.tCcD), decltype(args.residue_tCcD)>;
    return WarpReduced<Callbacks>(get<3>(args.tile_coord_mnkl), args.tCcD, args.residue_tCcD, this->params);
  }
};

using Scalar = Sm90ScalarBroadcast<float>;  // 1 value, from a pointer

// v = acc * scale[n] + bias[n]
template <class TileShape>
using Affine = Sm90EVT<Sm90Compute<cutlass::homogeneous_multiply_add, float, float, kRound>, Sm90AccFetch,
                       PerFeature<float, TileShape>, PerFeature<float, TileShape>>;

// The tree for epilogue kEpi: bf16(v) (kNone), e4m3(gelu(v) * out_scale_inv) (GELU), bf16(v + C)
// (kResidual); the amax of the value before the output's rounding on the way.
template <int kEpi, class TileShape>
struct Tree {
  using type = Sm90EVT<Sm90Compute<cutlass::epilogue::thread::Identity, cutlass::bfloat16_t, float, kRound>,
                       Sm90EVT<Amax, Affine<TileShape>>>;
};
template <class TileShape>
struct Tree<kResidual, TileShape> {
  using type = Sm90EVT<Sm90Compute<cutlass::epilogue::thread::Identity, cutlass::bfloat16_t, float, kRound>,
                       Sm90EVT<Amax, Sm90EVT<Sm90Compute<cutlass::plus, float, float, kRound>, Affine<TileShape>,
                                             Sm90SrcFetch<cutlass::bfloat16_t>>>>;
};
template <bool kTanh>
using GeluE4m3 = Gelu<kTanh, float, cutlass::float_e4m3_t>;  // into e4m3: gelu_poly.h's exact GELU
template <bool kTanh, class TileShape>
using GeluTree =
    Sm90EVT<Sm90Compute<cutlass::multiplies, cutlass::float_e4m3_t, float, kRound>,
            Sm90EVT<Amax, Sm90EVT<Sm90Compute<GeluE4m3<kTanh>::template Fn, float, float, kRound>, Affine<TileShape>>>,
            Scalar>;
template <class TileShape>
struct Tree<kGeluErf, TileShape> {
  using type = GeluTree<false, TileShape>;
};
template <class TileShape>
struct Tree<kGeluTanh, TileShape> {
  using type = GeluTree<true, TileShape>;
};
}  // namespace fp8

template <Sm90Kind kKind, int kEpi, Sm90Config kConfig>
struct Fp8Kernel {
  static constexpr bool kWithC = kKind == Sm90Kind::kFp8Residual;
  static constexpr bool kE4m3 = kKind == Sm90Kind::kFp8ActE4m3 || kKind == Sm90Kind::kFp8ActE4m3Tanh;
  static_assert(kWithC == (kEpi == gemm::kResidual) && kE4m3 == (kEpi == kGeluErf || kEpi == kGeluTanh),
                "the FP8 kinds: qkv without activation, GELU into e4m3, the residual");
  using Operand = cutlass::float_e4m3_t;
  using Out = std::conditional_t<kE4m3, cutlass::float_e4m3_t, cutlass::bfloat16_t>;
  using S = ScheduleOf<kConfig>;
  using TileShape = decltype(cute::make_shape(cute::get<0>(typename S::TileShape{}),
                                              cute::get<1>(typename S::TileShape{}), cute::_128{}));
  static constexpr int kAlign = 16;  // 16 bytes of e4m3: TMA's row alignment
  static constexpr int kAlignOut = 16 / sizeof(Out);
  using Row = cutlass::layout::RowMajor;
  using ElementC = std::conditional_t<kWithC, cutlass::bfloat16_t, void>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, typename S::ClusterShape,
      typename S::EpilogueTile, float, float, ElementC, Row, kAlignOut, Out, Row, kAlignOut,
      typename S::Epilogue, typename fp8::Tree<kEpi, TileShape>::type>::CollectiveOp;
  using BuiltMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Operand, Row, kAlign, Operand, cutlass::layout::ColumnMajor,
      kAlign, float, TileShape, typename S::ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename S::Mainloop>::CollectiveOp;
  // Fast accumulation: CUTLASS's plain mainloop, nothing to promote; else the promotions overlapped.
  static constexpr bool kFastAccum = sm90_config_fast_accum(kConfig);
  using CollectiveMainloop = std::conditional_t<kFastAccum, BuiltMainloop, Fp8OverlappedMainloop<BuiltMainloop>>;
  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

template <Sm90Kind kKind, int kEpi, Sm90Config kConfig>
int launch_fp8(const GemmParams& p, int sms, cudaStream_t stream) {
  using K = Fp8Kernel<kKind, kEpi, kConfig>;
  using Gemm = typename K::Gemm;
  using GK = typename Gemm::GemmKernel;
  const int M = static_cast<int>(p.M), N = p.N, Kd = p.K;
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {M, N, Kd, 1},
      {static_cast<const typename K::Operand*>(p.a),
       cutlass::make_cute_packed_stride(typename GK::StrideA{}, {M, Kd, 1}),
       static_cast<const typename K::Operand*>(p.b),
       cutlass::make_cute_packed_stride(typename GK::StrideB{}, {N, Kd, 1})},
      {{},
       static_cast<const typename K::ElementC*>(p.residual),
       cutlass::make_cute_packed_stride(typename GK::StrideC{}, {M, N, 1}),
       static_cast<typename K::Out*>(p.out),
       cutlass::make_cute_packed_stride(typename GK::StrideD{}, {M, N, 1})}};
  args.hw_info.sm_count = sms;
  if constexpr (!K::kFastAccum) args.mainloop.mma_promotion_interval = kFp8PromotionInterval;
  // The tree's arguments nest as its nodes do: each node's children first, its own last.
  const typename fp8::Affine<typename K::TileShape>::Arguments affine{
      {},                      // acc
      {p.scale_b, 0.f, {}},    // * scale[n] (x's folded in)
      {static_cast<const float*>(p.bias), 0.f, {}},  // + bias[n], float32 (null: 0)
      {}};
  const typename fp8::Amax::Arguments amax{p.amax, 0.f, {}};
  if constexpr (kEpi == kNone) {
    args.epilogue.thread = {{affine, amax}, {}};
  } else if constexpr (kEpi == kResidual) {
    args.epilogue.thread = {{{affine, {}, {}}, amax}, {}};
  } else {
    args.epilogue.thread = {{{affine, {}}, amax}, {{1.f}, {p.out_scale_inv}}, {}};
  }
  return run_adapter<Gemm>(args, stream);
}

// p through the configuration it names (kAuto: the shape's default) among those built for kKind.
template <Sm90Kind kKind, int kEpi>
int run_fp8(const GemmParams& p, cudaStream_t stream) {
  if (sm90_refusal(p, 1) != nullptr) return kRefused;
  return dispatch_config<kKind>(p, [&](auto c, int sms) {
    return launch_fp8<kKind, kEpi, decltype(c)::value>(p, sms, stream);
  });
}

}  // namespace vitfast::gemm::sm90
