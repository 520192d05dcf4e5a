#pragma once
// What the Hopper attention kernels share: the shared-memory swizzle atoms for a head dim, ex2, the
// fp32 -> 16-bit pair packing, and one wgmma over a named register array.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED  // wgmma widths that are multiples of 8, not only of 16
#endif
#include "cute/tensor.hpp"
#include "cutlass/numeric_types.h"

namespace vitfast::attention::sm90 {

using namespace cute;

// The widest head a CTA holds whole; longer sequences take the mma.sync kernels (attention_path.h).
constexpr int kMaxKeys = 256;

// A TMA stride must be a multiple of 16 bytes even along a dim of size 1, where it is never used.
inline int64_t tma_stride(int64_t stride, int size) { return size == 1 ? 8 : stride; }

// Shared-memory swizzle atom for rows of D 2-byte elements: the widest of 128/64/32 bytes that divides
// a row, so wgmma and TMA agree on one canonical layout (d = 80 rows are five 32-byte atoms).
template <class T, int D>
auto k_major_atom() {
  if constexpr (D % 64 == 0) return GMMA::Layout_K_SW128_Atom<T>{};
  else if constexpr (D % 32 == 0) return GMMA::Layout_K_SW64_Atom<T>{};
  else return GMMA::Layout_K_SW32_Atom<T>{};
}
template <class T, int D>
auto mn_major_atom() {
  if constexpr (D % 64 == 0) return GMMA::Layout_MN_SW128_Atom<T>{};
  else if constexpr (D % 32 == 0) return GMMA::Layout_MN_SW64_Atom<T>{};
  else return GMMA::Layout_MN_SW32_Atom<T>{};
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi, cutlass::bfloat16_t*) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, cutlass::half_t*) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// One wgmma over accumulator registers acc[0 .. Op's count): expands the array into the atom's
// operand list, so the accumulators stay in named registers.
template <class Op, class A, int kN, size_t... I>
__device__ __forceinline__ void wgmma_call(const A& a, uint64_t b, float (&acc)[kN], GMMA::ScaleOut sc,
                                           std::index_sequence<I...>) {
  if constexpr (std::is_same_v<A, uint64_t>) {
    Op::fma(a, b, acc[I]..., sc);
  } else {
    Op::fma(a[0], a[1], a[2], a[3], b, acc[I]..., sc);
  }
}

// Zeroes accumulators before their first wgmma (which ignores them): the asm reads its accumulator
// registers, so without this a previous tile's values stay live across the loop and spill.
template <int kN>
__device__ __forceinline__ void zero_fenced(float (&acc)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) acc[i] = 0.f;
#pragma unroll
  for (int i = 0; i < kN; ++i) warpgroup_fence_operand(acc[i]);
}

template <int kN>
__device__ __forceinline__ void fence(float (&acc)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) warpgroup_fence_operand(acc[i]);
}

}  // namespace vitfast::attention::sm90
