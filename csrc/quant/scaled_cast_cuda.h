#pragma once
// scaled_cast's CUDA driver as a declaration (defined in scaled_cast_cuda.cu without torch's headers;
// called by quantize_cuda.cpp with the stream and grid cap).
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/scaled_cast.h"

namespace vitfast {

// out[i] = scaled_cast_one<K>(in[i], scale[per_row ? i / cols : 0]) for i < n; at most max_blocks
// blocks of 256 threads. Returns the launch's error.
template <typename scalar_t, Cast8 K>
cudaError_t scaled_cast_cuda(const scalar_t* in, const float* scale, bool per_row, int64_t cols, uint8_t* out,
                             int64_t n, int64_t max_blocks, cudaStream_t stream);

}  // namespace vitfast
