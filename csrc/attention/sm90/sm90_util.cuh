#pragma once
// What the Hopper attention kernels share: the shared-memory swizzle atoms for a head dim, ex2, the
// fp32 -> 16-bit pair packing, one wgmma over a named register array, a head's TMA tile load, and on
// the host the persistent launch and the dispatch over head dims and key tiles.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED  // wgmma widths that are multiples of 8, not only of 16
#endif
#include "attention/attention_path.h"
#include "attention/mma.cuh"
#include "attention/sm90/attention_protocol.h"
#include "attention/sm90/attention_sm90.h"
#include "cute/tensor.hpp"
#include "cutlass/numeric_types.h"

namespace vitfast::attention::sm90 {

using namespace cute;

// The widest head the forward holds whole; longer sequences stream K and V (attention_fwd_long_sm90.cuh)
// up to kMaxLongKeys, as far as the backward's key groups go (attention_path.h).
constexpr int kMaxKeys = kSm90MaxKeys;
constexpr int kMaxLongKeys = kSm90MaxLongKeys;

// A TMA stride must be a multiple of 16 bytes even along a dim of size 1, where it is never used.
inline int64_t tma_stride(int64_t stride, int size) { return size == 1 ? 8 : stride; }

// Shared-memory swizzle atom for rows of D elements of T: the widest of 128/64/32 bytes that divides a
// row, so wgmma and TMA agree on one canonical layout (d = 80 rows of 16-bit elements are five 32-byte
// atoms).
template <class T, int D>
auto k_major_atom() {
  constexpr int kBytes = D * int(sizeof(T));
  if constexpr (kBytes % 128 == 0) return GMMA::Layout_K_SW128_Atom<T>{};
  else if constexpr (kBytes % 64 == 0) return GMMA::Layout_K_SW64_Atom<T>{};
  else return GMMA::Layout_K_SW32_Atom<T>{};
}
template <class T, int D>
auto mn_major_atom() {
  constexpr int kBytes = D * int(sizeof(T));
  if constexpr (kBytes % 128 == 0) return GMMA::Layout_MN_SW128_Atom<T>{};
  else if constexpr (kBytes % 64 == 0) return GMMA::Layout_MN_SW64_Atom<T>{};
  else return GMMA::Layout_MN_SW32_Atom<T>{};
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

// An fp32 accumulator array (x[4 j + e], 8-column blocks j) packed as the A operand of a register-operand wgmma: the
// accumulators of two adjacent 8-column blocks are one k16 step's fragment.
template <class T, int kN>
__device__ __forceinline__ void pack_a_frags(const float (&acc)[kN], uint32_t (&frag)[kN / 8][4]) {
#pragma unroll
  for (int kb = 0; kb < kN / 8; ++kb) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      frag[kb][r] = pack2(acc[kb * 8 + 2 * r], acc[kb * 8 + 2 * r + 1], static_cast<T*>(nullptr));
    }
  }
}

// One wgmma over accumulator registers acc[0 .. Op's count): expands the array into the atom's
// operand list, so the accumulators stay in named registers. R: float, or uint32_t for fp16
// accumulators (two columns per register).
template <class Op, class A, class R, int kN, size_t... I>
__device__ __forceinline__ void wgmma_call(const A& a, uint64_t b, R (&acc)[kN], GMMA::ScaleOut sc,
                                           std::index_sequence<I...>) {
  if constexpr (std::is_same_v<A, uint64_t>) {
    Op::fma(a, b, acc[I]..., sc);
  } else {
    Op::fma(a[0], a[1], a[2], a[3], b, acc[I]..., sc);
  }
}

// f(std::integral_constant<int, i>) for i in [0, kN): a loop whose index stays a compile-time constant
// inside lambdas that are not inlined (a run-time index into a register array moves it to the stack).
template <class F, int... I>
__device__ __forceinline__ void static_for(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int kN, class F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for(f, std::make_integer_sequence<int, kN>{});
}

// One straight batch of wgmmas for a run-time chunk count n in [1, kMax]: chunk(c) for each
// std::integral_constant c < n between one warpgroup.arrive and one commit. Where a chunk's wgmmas sat
// behind a run-time branch inside one batch, ptxas injected a warpgroup.arrive on that path and
// serialised them (C7520); one branch per count around a whole batch avoids it.
template <int kMax, class Chunk>
__device__ __forceinline__ void wgmma_batch(int n, Chunk&& chunk) {
  static_for<kMax>([&](auto n1) {
    if (n == n1 + 1) {
      warpgroup_arrive();
      static_for<decltype(n1)::value + 1>(chunk);
      warpgroup_commit_batch();
    }
  });
}

// Zeroes accumulators before their first wgmma (which ignores them): the asm reads its accumulator
// registers, so without this a previous tile's values stay live across the loop and spill.
template <class R, int kN>
__device__ __forceinline__ void zero_fenced(R (&acc)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) acc[i] = R(0);
#pragma unroll
  for (int i = 0; i < kN; ++i) warpgroup_fence_operand(acc[i]);
}

template <class R, int kN>
__device__ __forceinline__ void fence(R (&acc)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) warpgroup_fence_operand(acc[i]);
}

// fp16 accumulators (a wgmma's .f16 D: register i holds the two columns that fp32 accumulators keep
// at 2i and 2i + 1) as fp32 ones, same indexing.
template <int kN>
__device__ __forceinline__ void unpack_half2(const uint32_t (&h)[kN], float (&f)[2 * kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&h[i]));
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// a where kFirst, else b (accumulator arrays of either type, chosen at compile time).
template <bool kFirst, class A, class B>
__device__ __forceinline__ auto& pick(A& a, B& b) {
  if constexpr (kFirst) {
    return a;
  } else {
    return b;
  }
}

// fp16 accumulator pair h scaled by a, rounded once (the online softmax's rescale of fp16 O).
__device__ __forceinline__ uint32_t scale_half2(uint32_t h, float a) {
  const float2 x = __half22float2(*reinterpret_cast<const __half2*>(&h));
  const __half2 y = __floats2half2_rn(x.x * a, x.y * a);
  return *reinterpret_cast<const uint32_t*>(&y);
}

// The dynamic shared memory as S, its base rounded up to 1024 bytes (the 128-byte swizzle repeats
// every 1 KB, so the atoms must start on such a boundary).
template <class S>
__device__ __forceinline__ S& aligned_shared(char* raw) {
  return *reinterpret_cast<S*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023));
}

// One thread's TMA load of the tile at `coord` (in tiles of `tile`) of head (h, b) of the 4-D TMA
// tensor m into dst, laid out as `layout`, completing on the transaction barrier bar. An int block
// counts tiles along the first mode.
template <class Tma, class M, class TileShape, class Coord, class T, class SmemLayout>
__device__ __forceinline__ void tma_load_tile(const Tma& tma, const M& m, TileShape tile, Coord coord, int h, int b,
                                              T* dst, SmemLayout layout, uint64_t& bar) {
  Tensor g = local_tile(m(_, _, h, b), tile, coord);
  Tensor s = make_tensor(make_smem_ptr(dst), layout);
  auto [tg, ts] = tma_partition(tma, _0{}, Layout<_1>{}, group_modes<0, 2>(s), group_modes<0, 2>(g));
  copy(tma.with(bar), tg, ts);
}
template <class Tma, class M, class TileShape, class T, class SmemLayout>
__device__ __forceinline__ void tma_load_tile(const Tma& tma, const M& m, TileShape tile, int block, int h, int b,
                                              T* dst, SmemLayout layout, uint64_t& bar) {
  tma_load_tile(tma, m, tile, make_coord(block, 0), h, b, dst, layout, bar);
}

// On the host: a (N, D, H, B) view of q, k, v, O (or a gradient), d unit-stride, as a TMA source or
// destination; (D, N, H, B) with cols, V as the MN-major operand of P V.
template <int D, class P>
auto rows_tensor(P* ptr, const Strides3& s, int N, int H, int B) {
  return make_tensor(make_gmem_ptr(ptr), make_layout(make_shape(N, int(D), H, B),
                                                     make_stride(tma_stride(s.n, N), _1{}, tma_stride(s.h, H),
                                                                 tma_stride(s.b, B))));
}
template <int D, class P>
auto cols_tensor(P* ptr, const Strides3& s, int N, int H, int B) {
  return make_tensor(make_gmem_ptr(ptr), make_layout(make_shape(int(D), N, H, B),
                                                     make_stride(_1{}, tma_stride(s.n, N), tma_stride(s.h, H),
                                                                 tma_stride(s.b, B))));
}

// A persistent launch: one CTA per SM at most (fewer for less work), `threads` each, `smem` bytes of
// dynamic shared memory. Returns a Status.
template <class Kernel, class Params>
int launch_persistent(Kernel kernel, const Params& k, int work, int threads, int smem, cudaStream_t stream) {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return kLaunchFailed;
  }
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) {
    return kLaunchFailed;
  }
  kernel<<<work < sms ? work : sms, threads, smem, stream>>>(k);
  return cudaGetLastError() == cudaSuccess ? kOk : kLaunchFailed;
}

// The answer of a launcher for a shape it has no kernel for (with_head_dim's otherwise).
struct NotBuilt {
  int operator()() const { return kNotBuilt; }
};

// f(std::integral_constant<int, d>, std::integral_constant<int, keys>) for the built head dims and the
// key tile of N (protocol::fwd_keys: N rounded up to 64, at most kMaxKeys); kNotBuilt for anything else.
template <class F>
int with_head_dim_and_keys(int d, int N, F&& f) {
  return with_head_dim(
      d,
      [&](auto dim) {
        switch (protocol::fwd_keys(N)) {
          case 64: return f(dim, std::integral_constant<int, 64>{});
          case 128: return f(dim, std::integral_constant<int, 128>{});
          case 192: return f(dim, std::integral_constant<int, 192>{});
          case 256: return f(dim, std::integral_constant<int, 256>{});
          default: return int(kNotBuilt);
        }
      },
      NotBuilt{});
}

}  // namespace vitfast::attention::sm90
