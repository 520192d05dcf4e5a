#pragma once
// Tiled tensor-core GEMM, sm_80+ (mma.sync m16n8k16, also right on sm_90): out = epi(a @ b^T).
//   CTA tile 128 x 128 x 32, 8 warps in a 2 (M) x 4 (N) grid, each warp 64 x 32 (4 x 4 MMA tiles).
//   3-stage cp.async pipeline (48 KB of shared memory), ldmatrix.x4 fragment loads.
//   Shared-memory rows are 32 halves = four 16-byte chunks; chunk c of row r is stored at
//   c ^ ((r >> 1) & 3), so the 8 rows one ldmatrix phase reads fall in 8 distinct bank groups.
//   Out-of-range rows and k-chunks are zero-filled (cp.async src-size 0): any M, N; K % 8 == 0.
// kAccF16: the accumulators are fp16 (mma ...f16.f16.f16.f16, SASS HMMA.16816.F16): every MMA adds
// its 16-term product sum into the fp16 accumulator with one rounding. Otherwise fp32 (HMMA.F32).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "fp_convert.cuh"

#include <cstdint>

#include "gemm/mma_gemm.h"

namespace vitfast::gemm {

constexpr int kBN = 128, kBK = 32, kStages = 3, kThreads = 256;
constexpr int kWarpM = 64, kWarpN = 32, kMI = kWarpM / 16, kNI = kWarpN / 8;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Offset (in elements) of chunk c (8 elements) of row r in a swizzled [rows][kBK] tile.
__device__ __forceinline__ int swz(int r, int c) { return r * kBK + ((c ^ ((r >> 1) & 3)) << 3); }

template <typename T>
struct Mma;

template <>
struct Mma<__half> {
  static __device__ __forceinline__ void f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ void f16(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, {%0, %1};\n"
        : "+r"(d[0]), "+r"(d[1])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanh(float v) {
  return 0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
}

// One output pair (row, col), (row, col + 1): the epilogue and the stores.
template <typename T>
__device__ __forceinline__ void epilogue_pair(const GemmParams& p, int64_t row, int col, float v0, float v1) {
  if (row >= p.M || col >= p.N) return;
  const bool two = col + 1 < p.N;
  const int64_t o = row * p.N + col;
  if (p.bias != nullptr) {  // float32 (lp_matmul's) or x's dtype (linear_gelu's and linear_residual's)
    const auto* bf = static_cast<const float*>(p.bias);
    const T* bt = static_cast<const T*>(p.bias);
    v0 += p.bias_f32 ? bf[col] : to_float(bt[col]);
    if (two) v1 += p.bias_f32 ? bf[col + 1] : to_float(bt[col + 1]);
  }
  if (p.epilogue == kGeluErf || p.epilogue == kGeluTanh) {
    if (p.round_pre) {
      v0 = to_float(from_float<T>(v0));
      v1 = to_float(from_float<T>(v1));
    }
    if (p.pre != nullptr) {
      T* pre = static_cast<T*>(p.pre) + o;
      pre[0] = from_float<T>(v0);
      if (two) pre[1] = from_float<T>(v1);
    }
    v0 = p.epilogue == kGeluErf ? gelu_erf(v0) : gelu_tanh(v0);
    v1 = p.epilogue == kGeluErf ? gelu_erf(v1) : gelu_tanh(v1);
  } else if (p.epilogue == kResidual) {
    if (p.out_f32) {
      const float* r = static_cast<const float*>(p.residual) + o;
      v0 += r[0];
      if (two) v1 += r[1];
    } else {
      const T* r = static_cast<const T*>(p.residual) + o;
      v0 += to_float(r[0]);
      if (two) v1 += to_float(r[1]);
    }
  }
  // Paired stores need an even N (then o is even and the pair aligned).
  if (p.out_f32) {
    float* out = static_cast<float*>(p.out) + o;
    if (two && (p.N & 1) == 0) {
      *reinterpret_cast<float2*>(out) = make_float2(v0, v1);
    } else {
      out[0] = v0;
      if (two) out[1] = v1;
    }
  } else {
    T* out = static_cast<T*>(p.out) + o;
    if (two && (p.N & 1) == 0) {
      T pair[2] = {from_float<T>(v0), from_float<T>(v1)};
      *reinterpret_cast<uint32_t*>(out) = *reinterpret_cast<const uint32_t*>(pair);
    } else {
      out[0] = from_float<T>(v0);
      if (two) out[1] = from_float<T>(v1);
    }
  }
}

template <typename T, bool kAccF16>
__global__ void __launch_bounds__(kThreads) mma_gemm_kernel(const GemmParams p) {
  __shared__ __align__(128) T sa[kStages][kBM * kBK];
  __shared__ __align__(128) T sb[kStages][kBN * kBK];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp & 1, warp_n = warp >> 1;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM;
  const int n0 = blockIdx.x * kBN;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  const int ktiles = (p.K + kBK - 1) / kBK;

  // Each thread copies two 16-byte chunks of A and two of B per stage.
  auto load_stage = [&](int stage, int kt) {
    const int k0 = kt * kBK;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int id = tid + i * kThreads, r = id >> 2, c = id & 3;
      const int k = k0 + c * 8;
      const int64_t gm = m0 + r;
      const bool pa = gm < p.M && k < p.K;
      cp_async16(smem_addr(&sa[stage][swz(r, c)]), pa ? a + gm * p.K + k : a, pa);
      const int gn = n0 + r;
      const bool pb = gn < p.N && k < p.K;
      cp_async16(smem_addr(&sb[stage][swz(r, c)]), pb ? b + static_cast<int64_t>(gn) * p.K + k : b, pb);
    }
  };

  float accf[kAccF16 ? 1 : kMI][kAccF16 ? 1 : kNI][4];
  uint32_t acch[kAccF16 ? kMI : 1][kAccF16 ? kNI : 1][2];
#pragma unroll
  for (int i = 0; i < kMI; ++i) {
#pragma unroll
    for (int j = 0; j < kNI; ++j) {
      if constexpr (kAccF16) {
        acch[i][j][0] = acch[i][j][1] = 0u;
      } else {
        accf[i][j][0] = accf[i][j][1] = accf[i][j][2] = accf[i][j][3] = 0.f;
      }
    }
  }

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt landed for every thread; stage (kt - 1) % kStages is free to refill
    const int next = kt + kStages - 1;
    if (next < ktiles) load_stage(next % kStages, next);
    cp_async_commit();  // always, so the wait count above stays exact

    const T* ta = sa[kt % kStages];
    const T* tb = sb[kt % kStages];
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[kMI][4], bf[kNI / 2][4];
#pragma unroll
      for (int i = 0; i < kMI; ++i) {
        const int r = warp_m * kWarpM + i * 16 + (lane & 15);
        ldmatrix_x4(af[i], smem_addr(ta + swz(r, kk * 2 + (lane >> 4))));
      }
#pragma unroll
      for (int j = 0; j < kNI / 2; ++j) {
        // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int r = warp_n * kWarpN + j * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(bf[j], smem_addr(tb + swz(r, kk * 2 + ((lane >> 3) & 1))));
      }
#pragma unroll
      for (int i = 0; i < kMI; ++i) {
#pragma unroll
        for (int j = 0; j < kNI; ++j) {
          const uint32_t b0 = bf[j >> 1][(j & 1) * 2], b1 = bf[j >> 1][(j & 1) * 2 + 1];
          if constexpr (kAccF16) {
            Mma<T>::f16(acch[i][j], af[i], b0, b1);
          } else {
            Mma<T>::f32(accf[i][j], af[i], b0, b1);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // Accumulator layout: d0, d1 at (lane / 4, 2 * (lane % 4) + {0, 1}); d2, d3 eight rows below.
#pragma unroll
  for (int i = 0; i < kMI; ++i) {
#pragma unroll
    for (int j = 0; j < kNI; ++j) {
      const int64_t row = m0 + warp_m * kWarpM + i * 16 + (lane >> 2);
      const int col = n0 + warp_n * kWarpN + j * 8 + (lane & 3) * 2;
      float v[4];
      if constexpr (kAccF16) {
        const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&acch[i][j][0]));
        const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&acch[i][j][1]));
        v[0] = lo.x; v[1] = lo.y; v[2] = hi.x; v[3] = hi.y;
      } else {
        v[0] = accf[i][j][0]; v[1] = accf[i][j][1]; v[2] = accf[i][j][2]; v[3] = accf[i][j][3];
      }
      epilogue_pair<T>(p, row, col, v[0], v[1]);
      epilogue_pair<T>(p, row + 8, col, v[2], v[3]);
    }
  }
}

}  // namespace vitfast::gemm
