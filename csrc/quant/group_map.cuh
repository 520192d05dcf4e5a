#pragma once
// The loop the quantizers' CUDA kernels share (elementwise_cuda.cuh, scaled_cast_cuda.cu): a
// grid-stride loop over groups of four consecutive elements, the unit of one Philox call and of one
// per-row scale lookup. A thread reads 16 bytes of input at a time (one group of fp32, two of fp16 or
// bf16) and issues kMapUnroll such loads before its first store, so each SM keeps enough bytes in
// flight to run at the memory's rate. A misaligned tensor, and the tail after the last whole vector,
// go element by element.
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

namespace vitfast {

// In's value as a float with a NaN's sign kept: the GPU's f16 -> f32 conversion returns a positive
// canonical NaN where the CPU's keeps the sign (scaled_cast's NaN codes carry it).
template <typename In>
__device__ __forceinline__ float as_float(In v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float as_float(c10::Half v) {
  const float f = static_cast<float>(v);
  return f == f ? f : copysignf(f, (v.x & 0x8000) ? -1.0f : 1.0f);
}

template <typename T, int N>
struct alignas(N * sizeof(T)) Vec {
  T v[N];
};

constexpr int kMapThreads = 256;
constexpr int kMapUnroll = 2;
// Resident blocks asked of ptxas (<= 80 registers): 768 threads and 24 KiB of loads in flight per SM.
constexpr int kMapBlocksPerSm = 3;

// Groups of four per 16-byte load of In.
template <typename In>
constexpr int kMapGroups = sizeof(In) >= 4 ? 1 : 16 / (4 * static_cast<int>(sizeof(In)));

// Blocks of kMapThreads for n elements of In, at most max_blocks (the loop strides over the rest).
template <typename In>
int map_blocks(int64_t n, int64_t max_blocks) {
  const int64_t per_block = int64_t{kMapThreads} * kMapUnroll * 4 * kMapGroups<In>;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + per_block - 1) / per_block, max_blocks)));
}

// Whether both pointers are aligned to their vector (16 bytes of In, the same count of Out).
template <typename In, typename Out>
bool map_aligned(const In* in, const Out* out) {
  constexpr int kElems = 4 * kMapGroups<In>;
  return reinterpret_cast<uintptr_t>(in) % sizeof(Vec<In, kElems>) == 0 &&
         reinterpret_cast<uintptr_t>(out) % sizeof(Vec<Out, kElems>) == 0;
}

// out[4g + j] = y[j] for the y that group_op(g, x, count, y) computes from x[j] = in[4g + j] as float,
// j < count (count < 4 only in the last group; x is zero past it).
template <typename In, typename Out, typename GroupOp>
__device__ __forceinline__ void group_map(const In* __restrict__ in, Out* __restrict__ out, int64_t n, bool aligned,
                                          const GroupOp& group_op) {
  constexpr int kGroups = kMapGroups<In>, kElems = 4 * kGroups;
  using VIn = Vec<In, kElems>;
  using VOut = Vec<Out, kElems>;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = aligned ? n / kElems : 0;
  for (int64_t v0 = tid; v0 < vectors; v0 += kMapUnroll * threads) {
    VIn x[kMapUnroll];
#pragma unroll
    for (int u = 0; u < kMapUnroll; ++u) {  // every load issued before the first store
      const int64_t v = v0 + u * threads;
      if (v < vectors) x[u] = reinterpret_cast<const VIn*>(in)[v];
    }
#pragma unroll
    for (int u = 0; u < kMapUnroll; ++u) {
      const int64_t v = v0 + u * threads;
      if (v >= vectors) break;
      VOut y;
#pragma unroll
      for (int k = 0; k < kGroups; ++k) {
        const float xs[4] = {as_float(x[u].v[4 * k]), as_float(x[u].v[4 * k + 1]), as_float(x[u].v[4 * k + 2]),
                             as_float(x[u].v[4 * k + 3])};
        Out ys[4];
        group_op(v * kGroups + k, xs, 4, ys);
#pragma unroll
        for (int j = 0; j < 4; ++j) y.v[4 * k + j] = ys[j];
      }
      reinterpret_cast<VOut*>(out)[v] = y;
    }
  }
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = vectors * kGroups + tid; g < groups; g += threads) {
    const int count = static_cast<int>(std::min<int64_t>(4, n - 4 * g));
    float xs[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    Out ys[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // unrolled with constant indices: the arrays stay in registers
      if (j < count) xs[j] = as_float(in[4 * g + j]);
    }
    group_op(g, xs, count, ys);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < count) out[4 * g + j] = ys[j];
    }
  }
}

}  // namespace vitfast
