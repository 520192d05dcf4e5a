#pragma once
// Shared-memory tiles of the attention kernels: rows of D elements padded by 8 (16 bytes), so the
// eight 16-byte rows one ldmatrix reads fall in distinct banks for every head dim used (32..128).
#include "attention/mma.cuh"

namespace vitfast {

template <int D>
struct TileRow {
  static constexpr int kStride = D + 8;  // elements between rows in shared memory
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
};

// rows x D tile starting at token row0 of a (N, D) matrix with row stride `stride` (elements):
// one cp.async per 16-byte chunk; rows at or past N are zero-filled, so masked products stay finite.
// kRowWalk: each thread keeps one column chunk and walks rows kThreads / kChunks apart, its row and
// column found once (no div/mod per chunk; at d = 80 and 96 the last kThreads % kChunks threads copy
// nothing). Otherwise chunk c = tid + i · kThreads is row c / kChunks (a multiply-high at d = 80,
// 96): the backward keeps that, because at d = 80 the walk costs it 16 bytes of spill on sm_90.
template <int D, int kRows, int kThreads, bool kRowWalk = true, typename T>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, int64_t stride, int row0, int N, int tid) {
  constexpr int kChunks = TileRow<D>::kChunks;
  if constexpr (kRowWalk) {
    constexpr int kRowsPerPass = kThreads / kChunks;
    const int r0 = tid / kChunks, col = (tid % kChunks) * 8;
    if (r0 >= kRowsPerPass) return;
    const T* s = src + static_cast<int64_t>(row0 + r0) * stride + col;
    const int64_t pass = kRowsPerPass * stride;
    T* d = dst + r0 * TileRow<D>::kStride + col;
#pragma unroll
    for (int i = 0; i < (kRows + kRowsPerPass - 1) / kRowsPerPass; ++i) {
      const int r = r0 + i * kRowsPerPass;
      if (kRows % kRowsPerPass == 0 || r < kRows) {
        const bool valid = row0 + r < N;
        mma::cp_async_16(d + i * kRowsPerPass * TileRow<D>::kStride, valid ? s + i * pass : src, valid);
      }
    }
  } else {
#pragma unroll
    for (int c = tid; c < kRows * kChunks; c += kThreads) {
      const int r = c / kChunks;
      const int col = (c % kChunks) * 8;
      const bool valid = row0 + r < N;
      const T* s = valid ? src + static_cast<int64_t>(row0 + r) * stride + col : src;
      mma::cp_async_16(dst + r * TileRow<D>::kStride + col, s, valid);
    }
  }
}

// ldmatrix address of lane for an x4 load of the 16x16 block at (row0, col0) of a row-major tile,
// as an A operand (or a non-transposed pair of B operands): matrices (r, c), (r+8, c), (r, c+8),
// (r+8, c+8).
// Each is a lane-dependent offset (computed once) plus a compile-time one; tiles are passed as their
// shared-space address (mma::smem_addr) and hold 2-byte elements.
template <int kStride>
__device__ __forceinline__ uint32_t frag_a_addr(uint32_t tile, int row0, int col0, int lane) {
  return tile + 2 * ((row0 + (lane & 15)) * kStride + col0 + ((lane >> 4) << 3));
}

// x4 load of the B operands of two adjacent n8 blocks from a tile stored [n][k] (K of q kᵀ):
// matrices (n, k), (n, k+8), (n+8, k), (n+8, k+8) -> b[nb][0], b[nb][1], b[nb+1][0], b[nb+1][1].
template <int kStride>
__device__ __forceinline__ uint32_t frag_b_nk_addr(uint32_t tile, int n0, int k0, int lane) {
  const int mi = lane >> 3;
  return tile + 2 * ((n0 + (lane & 7) + ((mi >> 1) << 3)) * kStride + k0 + ((mi & 1) << 3));
}

// x4 .trans load of the B operands of two adjacent n8 blocks from a tile stored [k][n] (V of p v):
// matrices (k, n), (k+8, n), (k, n+8), (k+8, n+8) -> b[nb][0], b[nb][1], b[nb+1][0], b[nb+1][1].
template <int kStride>
__device__ __forceinline__ uint32_t frag_b_kn_addr(uint32_t tile, int k0, int n0, int lane) {
  const int mi = lane >> 3;
  return tile + 2 * ((k0 + (lane & 7) + ((mi & 1) << 3)) * kStride + n0 + ((mi >> 1) << 3));
}

}  // namespace vitfast
