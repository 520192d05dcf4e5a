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
  return reinterpret_cast<uintptr_t>(in) % sizeof(Pack4<In>) == 0 && reinterpret_cast<uintptr_t>(out) % sizeof(Pack4<Out>) == 0;
}

}  // namespace vitfast
