// scaled_cast's CUDA kernel: group_map.cuh's loop (16 bytes of input per load), the scale read from
// device memory so a dynamic scale needs no host synchronisation.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "quant/group_map.cuh"
#include "quant/scaled_cast_cuda.h"

namespace vitfast {
namespace {

// The four scales of group g: one row division per group (32-bit where the indices fit) and a step at
// each row boundary inside it, not a 64-bit division per element. Elements past n get no scale read.
template <typename Index>
__device__ __forceinline__ void row_scales(const float* __restrict__ scale, int64_t cols, int64_t n, int64_t g,
                                           float (&s)[4]) {
  const Index first = static_cast<Index>(4 * g), c = static_cast<Index>(cols);
  Index row = first / c, next = (row + 1) * c;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const Index i = first + j;
    if (static_cast<int64_t>(i) >= n) break;
    if (i >= next) {  // cols < 4 can cross more than one boundary
      row = i / c;
      next = (row + 1) * c;
    }
    s[j] = scale[row];
  }
}

template <typename scalar_t, Cast8 K>
__global__ void __launch_bounds__(kMapThreads, kMapBlocksPerSm)
    scaled_cast_kernel(const scalar_t* __restrict__ in, const float* __restrict__ scale, bool per_row, int64_t cols,
                       uint8_t* __restrict__ out, int64_t n, bool aligned) {
  const float tensor_scale = per_row ? 0.0f : *scale;
  const bool small = n <= static_cast<int64_t>(UINT32_MAX) - 4;
  group_map(in, out, n, aligned, [&](int64_t g, const float (&x)[4], int, uint8_t (&y)[4]) {
    float s[4] = {tensor_scale, tensor_scale, tensor_scale, tensor_scale};
    if (per_row) small ? row_scales<uint32_t>(scale, cols, n, g, s) : row_scales<int64_t>(scale, cols, n, g, s);
#pragma unroll
    for (int j = 0; j < 4; ++j) y[j] = scaled_cast_one<K>(x[j], s[j]);
  });
}

}  // namespace

template <typename scalar_t, Cast8 K>
cudaError_t scaled_cast_cuda(const scalar_t* in, const float* scale, bool per_row, int64_t cols, uint8_t* out,
                             int64_t n, int64_t max_blocks, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  scaled_cast_kernel<scalar_t, K><<<map_blocks<scalar_t>(n, max_blocks), kMapThreads, 0, stream>>>(
      in, scale, per_row, cols, out, n, map_aligned(in, out));
  return cudaGetLastError();
}

#define VF_SCALED_CAST_ONE(T, K)                                                                             \
  template cudaError_t scaled_cast_cuda<T, K>(const T*, const float*, bool, int64_t, uint8_t*, int64_t,      \
                                              int64_t, cudaStream_t);
#define VF_SCALED_CAST_TARGETS(T)      \
  VF_SCALED_CAST_ONE(T, Cast8::kE4M3)  \
  VF_SCALED_CAST_ONE(T, Cast8::kE5M2)  \
  VF_SCALED_CAST_ONE(T, Cast8::kInt8)
VF_SCALED_CAST_TARGETS(float)
VF_SCALED_CAST_TARGETS(c10::Half)
VF_SCALED_CAST_TARGETS(c10::BFloat16)

}  // namespace vitfast
