#pragma once
// Which elements share an exponent in block_quantize (quantize.h computes the shared maxima).
#include <cstdint>

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

}  // namespace vitfast
