#pragma once
// The three quantizers' per-element operations, shared by the CPU and CUDA drivers and free of
// torch's headers (the CUDA kernels are compiled without them).
#include <cstdint>
#include <type_traits>

#include "quant/block_layout.h"
#include "quant/rounding.h"

namespace vitfast {

template <Rounding R>
struct FloatOp {
  FloatSpec spec;
  VF_HD float operator()(float x, uint32_t rnd, int64_t) const { return quantize_float<R>(x, spec, rnd); }
  // The branch-free path (see quantize_group), exact wherever slow() is 0.
  static constexpr bool kHasFastPath = true;
  VF_HD uint32_t fast_bits(uint32_t u, uint32_t rnd = 0u) const { return quantize_float_fast_bits<R>(u, spec, rnd); }
  VF_HD uint32_t slow(uint32_t u) const { return float_slow_path(u, spec); }
};

template <Rounding R>
struct FixedOp {
  FixedSpec spec;
  VF_HD float operator()(float x, uint32_t rnd, int64_t) const { return quantize_fixed<R>(x, spec, rnd); }
};

template <Rounding R>
struct BlockOp {
  const float* maxima;
  BlockLayout layout;
  int wl;
  VF_HD float operator()(float x, uint32_t rnd, int64_t i) const {
    return quantize_block<R>(x, maxima[layout.group(i)], wl, rnd);
  }
};

template <typename Op, typename = void>
struct HasFastPath : std::false_type {};
template <typename Op>
struct HasFastPath<Op, std::void_t<decltype(Op::kHasFastPath)>> : std::bool_constant<Op::kHasFastPath> {};

// Elements 4g..4g+3 of a quantizer (x in, random words r; the first `count` are real, the rest of x
// zero padding): op.fast_bits for the four, the real ones redone by op() when op.slow flags one
// (values in a narrow format's subnormal range: rare), so the common case has no divergent branch.
// The CUDA kernels' path for every dtype and rounding; the CPU driver runs the same three functions
// over blocks (elementwise_cpu.h), so the CPU's tests check the bits the GPU computes.
template <typename Op>
VF_HD void quantize_group(const Op& op, const float (&x)[4], const uint32_t (&r)[4], int64_t g, int count,
                          float (&y)[4]) {
  if constexpr (HasFastPath<Op>::value) {
    uint32_t slow = 0u;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int j = 0; j < 4; ++j) {
      const uint32_t u = float_bits(x[j]);
      y[j] = bits_float(op.fast_bits(u, r[j]));
      slow |= op.slow(u);
    }
    if (!slow) return;
  }
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int j = 0; j < 4; ++j) {
    if (j < count) y[j] = op(x[j], r[j], 4 * g + j);  // BlockOp reads per index: none past the end
  }
}

}  // namespace vitfast
