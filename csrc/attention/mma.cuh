#pragma once
// The PTX the attention kernels are built from (sm_80 and newer): cp.async 16-byte copies into shared
// memory, ldmatrix, and the m16n8k16 tensor-core product with fp32 or fp16 accumulators.
//
// Fragment layout of mma.m16n8k16 (g = lane / 4, t = lane % 4), used throughout:
//   A (16x16, four .b32 of two elements): {row g, cols 2t..2t+1}, {row g+8, same}, {row g, cols
//   2t+8..}, {row g+8, cols 2t+8..}; B (16x8, two .b32): {rows 2t..2t+1, col g}, {rows 2t+8.., col g};
//   C (16x8): c0, c1 at row g, cols 2t, 2t+1; c2, c3 at row g+8 (fp16 accumulators: {c0,c1}, {c2,c3}).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace vitfast {
namespace mma {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; when !valid nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// 2^x by the special-function unit, subnormals flushed: the softmax's exponential in log2 units.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 b16 matrices; lane l gives the shared-space address of row l % 8 of matrix l / 8.
// Addresses are 32-bit shared-window offsets, so base + constant folds into the instruction.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Element type traits: packing two floats into one .b32 operand, and scalar conversions.
template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static __half from_float(float x) { return __float2half_rn(x); }
  __device__ __forceinline__ static float to_float(__half x) { return __half2float(x); }
};

template <>
struct Elem<__nv_bfloat16> {
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  __device__ __forceinline__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
};

// c += a b with fp32 accumulators.
__device__ __forceinline__ void mma_f32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_f32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                        __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// c += a b with fp16 accumulators (SASS HMMA.16816.F16): FP16_16.
__device__ __forceinline__ void mma_f16(uint32_t (&c)[2], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, {%0, %1};\n"
      : "+r"(c[0]), "+r"(c[1])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One 16x8 accumulator tile, fp32 or fp16, read and written as four floats in C layout.
template <typename T, bool kF16>
struct Acc {
  float c[4];
  __device__ __forceinline__ void zero() { c[0] = c[1] = c[2] = c[3] = 0.f; }
  __device__ __forceinline__ void mma(const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma_f32(c, a, b0, b1, T()); }
  __device__ __forceinline__ float get(int i) const { return c[i]; }
  __device__ __forceinline__ void scale(float row_g, float row_g8) {
    c[0] *= row_g; c[1] *= row_g; c[2] *= row_g8; c[3] *= row_g8;
  }
};

template <>
struct Acc<__half, true> {
  uint32_t h[2];
  __device__ __forceinline__ void zero() { h[0] = h[1] = 0u; }
  __device__ __forceinline__ void mma(const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { mma_f16(h, a, b0, b1); }
  __device__ __forceinline__ float get(int i) const {
    const __half2 v = *reinterpret_cast<const __half2*>(&h[i >> 1]);
    return (i & 1) ? __high2float(v) : __low2float(v);
  }
  // The online softmax's rescale, rounded back into the fp16 accumulator.
  __device__ __forceinline__ void scale(float row_g, float row_g8) {
    h[0] = Elem<__half>::pack(get(0) * row_g, get(1) * row_g);
    h[1] = Elem<__half>::pack(get(2) * row_g8, get(3) * row_g8);
  }
};

}  // namespace mma
}  // namespace vitfast
