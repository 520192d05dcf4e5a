#pragma once
// The three quantizers' per-element operations, shared by the CPU and CUDA drivers and free of
// torch's headers (the CUDA kernels are compiled without them).
#include <cstdint>

#include "quant/block_layout.h"
#include "quant/rounding.h"

namespace vitfast {

template <Rounding R>
struct FloatOp {
  FloatSpec spec;
  VF_HD float operator()(float x, uint32_t rnd, int64_t) const { return quantize_float<R>(x, spec, rnd); }
  // The vectorisable path the CPU driver takes for float32 input (deterministic rounding only).
  static constexpr bool kHasFastPath = R != Rounding::kStochastic;
  VF_HD uint32_t fast_bits(uint32_t u) const { return quantize_float_fast_bits<R>(u, spec); }
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

}  // namespace vitfast
