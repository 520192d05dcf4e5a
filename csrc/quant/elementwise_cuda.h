#pragma once
// The quantizers' CUDA driver as a declaration: quantize_cuda.cpp calls it with the stream and grid
// cap; elementwise_cuda.cuh defines it and each <op>_cuda.cu instantiates it for its operation, all
// without torch's headers.
#include <cuda_runtime.h>

#include <cstdint>

namespace vitfast {

// out[i] = op(in[i]) for i < n, the random word of element i from Philox(i / 4, seed) when
// kStochastic; at most max_blocks blocks of 256 threads. Returns the launch's error.
template <typename scalar_t, bool kStochastic, typename Op>
cudaError_t elementwise_cuda(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op,
                             int64_t max_blocks, cudaStream_t stream);

}  // namespace vitfast
