#pragma once
// What the quantizers' CUDA kernels (elementwise_cuda.cuh, scaled_cast_cuda.cu) share: each thread
// takes four consecutive elements, read and written as one Pack4 (a 16-byte load for fp32, a 32-bit
// store for 8-bit codes) when both pointers are aligned to it, in a grid-stride loop.
#include <algorithm>
#include <cstdint>

namespace vitfast {

template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

constexpr int kPack4Threads = 256;

// Blocks of kPack4Threads for n elements, four per thread, at most max_blocks (the loop strides over the rest).
inline int pack4_blocks(int64_t n, int64_t max_blocks) {
  const int64_t groups = (n + 3) / 4;
  return static_cast<int>(std::min<int64_t>((groups + kPack4Threads - 1) / kPack4Threads, max_blocks));
}

template <typename In, typename Out>
bool pack4_aligned(const In* in, const Out* out) {
  return reinterpret_cast<uintptr_t>(in) % sizeof(Pack4<In>) == 0 &&
         reinterpret_cast<uintptr_t>(out) % sizeof(Pack4<Out>) == 0;
}

// The loop itself: out[4g + j] = f(in[4g + j] as float, j) for j < 4, where f = per_group(g) is made
// once per group of four (the stochastic quantizers draw one Philox call's four words there).
template <typename In, typename Out, typename PerGroup>
__device__ __forceinline__ void pack4_map(const In* __restrict__ in, Out* __restrict__ out, int64_t n, bool aligned,
                                          PerGroup per_group) {
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const auto f = per_group(g);
    const int64_t base = 4 * g;
    if (aligned && base + 4 <= n) {
      const Pack4<In> x = *reinterpret_cast<const Pack4<In>*>(in + base);
      Pack4<Out> y;
#pragma unroll
      for (int j = 0; j < 4; ++j) y.v[j] = f(static_cast<float>(x.v[j]), j);
      *reinterpret_cast<Pack4<Out>*>(out + base) = y;
    } else {
      for (int j = 0; j < 4 && base + j < n; ++j) out[base + j] = f(static_cast<float>(in[base + j]), j);
    }
  }
}

}  // namespace vitfast
