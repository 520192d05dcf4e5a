#pragma once
// Which elements share an exponent in block_quantize, and the shared maxima themselves.
#include <ATen/ATen.h>

#include <optional>

#include "macros.h"

namespace vitfast {

// x (contiguous) viewed as (outer, n, inner) around `dim`.
struct BlockLayout {
  enum Mode : int { kTensor = 0, kSlice = 1, kBlock = 2 } mode;
  int64_t n, inner, blocks, block_size;

  // Index into the maxima tensor for element i of the contiguous input.
  VF_HD int64_t group(int64_t i) const {
    if (mode == kTensor) return 0;
    const int64_t j = (i / inner) % n;
    if (mode == kSlice) return j;
    const int64_t outer_idx = i / (n * inner);
    return (outer_idx * blocks + j / block_size) * inner + i % inner;
  }
};

// max |x| over the finite elements of every group, as a contiguous float32 tensor; fills `layout`.
inline at::Tensor block_maxima(const at::Tensor& x, std::optional<int64_t> dim, std::optional<int64_t> block_size,
                               BlockLayout& layout) {
  const at::Tensor a = x.abs().masked_fill(x.isfinite().logical_not(), 0).to(at::kFloat);
  layout = BlockLayout{BlockLayout::kTensor, 1, 1, 1, 1};
  if (!dim.has_value()) return a.amax().reshape({1});
  const int64_t d = at::maybe_wrap_dim(*dim, x.dim());
  const int64_t n = x.size(d);
  const int64_t outer = c10::multiply_integers(x.sizes().begin(), x.sizes().begin() + d);
  const int64_t inner = c10::multiply_integers(x.sizes().begin() + d + 1, x.sizes().end());
  const at::Tensor a3 = a.reshape({outer, n, inner});
  if (!block_size.has_value()) {
    layout = BlockLayout{BlockLayout::kSlice, n, inner, 1, 1};
    return a3.amax(at::IntArrayRef{0, 2}).contiguous();
  }
  const int64_t b = *block_size, blocks = (n + b - 1) / b;
  layout = BlockLayout{BlockLayout::kBlock, n, inner, blocks, b};
  // Zero padding never raises a maximum of absolute values.
  const at::Tensor padded = at::constant_pad_nd(a3, {0, 0, 0, blocks * b - n}, 0);
  return padded.reshape({outer, blocks, b, inner}).amax(2).contiguous();
}

}  // namespace vitfast
