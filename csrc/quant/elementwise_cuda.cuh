#pragma once
// CUDA twin of elementwise_cpu.h: groups of four elements through quantize_group, each with the four
// words of one Philox call, so results match the CPU bit for bit; group_map.cuh's loop (16-byte loads).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "quant/elementwise_cuda.h"
#include "quant/group_map.cuh"
#include "quant/philox.h"
#include "quant/quant_ops.h"

namespace vitfast {

template <typename scalar_t, bool kStochastic, typename Op>
__global__ void __launch_bounds__(kMapThreads, kMapBlocksPerSm)
    elementwise_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t n, uint64_t seed, Op op,
                       bool aligned) {
  group_map(in, out, n, aligned, [&](int64_t g, const float (&x)[4], int count, scalar_t (&y)[4]) {
    uint32_t r[4] = {0u, 0u, 0u, 0u};
    if (kStochastic) {
      const Philox4 p = philox4x32_10(static_cast<uint64_t>(g), seed);
      r[0] = p.v[0]; r[1] = p.v[1]; r[2] = p.v[2]; r[3] = p.v[3];
    }
    float q[4];
    quantize_group(op, x, r, g, count, q);
#pragma unroll
    for (int j = 0; j < 4; ++j) y[j] = static_cast<scalar_t>(q[j]);
  });
}

template <typename scalar_t, bool kStochastic, typename Op>
cudaError_t elementwise_cuda(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op,
                             int64_t max_blocks, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  elementwise_kernel<scalar_t, kStochastic><<<map_blocks<scalar_t>(n, max_blocks), kMapThreads, 0, stream>>>(
      in, out, n, seed, op, map_aligned(in, out));
  return cudaGetLastError();
}

// The driver for OpT<R> over float32, float16 and bfloat16 and the three roundings: the nine
// instantiations that quantize.h's entry points call.
#define VF_ELEMENTWISE_ONE(T, R, OpT)                                                                        \
  template cudaError_t elementwise_cuda<T, R == Rounding::kStochastic, OpT<R>>(                              \
      const T*, T*, int64_t, uint64_t, const OpT<R>&, int64_t, cudaStream_t);
#define VF_ELEMENTWISE_ROUNDINGS(T, OpT)            \
  VF_ELEMENTWISE_ONE(T, Rounding::kNearest, OpT)     \
  VF_ELEMENTWISE_ONE(T, Rounding::kNearestAway, OpT) \
  VF_ELEMENTWISE_ONE(T, Rounding::kStochastic, OpT)
#define VF_INSTANTIATE_ELEMENTWISE(OpT)          \
  VF_ELEMENTWISE_ROUNDINGS(float, OpT)           \
  VF_ELEMENTWISE_ROUNDINGS(c10::Half, OpT)       \
  VF_ELEMENTWISE_ROUNDINGS(c10::BFloat16, OpT)

}  // namespace vitfast
