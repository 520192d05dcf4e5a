#pragma once
// Backward attention, FlashAttention-2 style, with mma.sync m16n8k16 (sm_80 and sm_90).
//
// 1. delta = rowsum(dO ∘ O) per query row (attention_bwd_delta_kernel).
// 2. One block per 64 keys (4 warps, 16 keys each), looping over the queries in blocks of kBlockM:
//    rebuild Pᵀ = exp(K Qᵀ · scale + biasᵀ - lse) (keys as rows, so that Pᵀ and dSᵀ are the A
//    operands of dV += Pᵀ dO and dK += dSᵀ Q straight from registers), dPᵀ = V dOᵀ,
//    dSᵀ = Pᵀ ∘ (dPᵀ - delta) (+ the logits' own gradient), dbias += dS (fp32 atomics, broadcast
//    dims summed by sharing addresses), and dQ += dS K · scale, through shared memory, into an fp32
//    buffer with atomics (each query row gets one add per key block).
#include <cmath>

#include "attention/attention_params.h"
#include "attention/attention_tile.cuh"

namespace vitfast {

struct BwdConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockN = 16 * kWarps;  // keys per block
  static constexpr int kStrideS = kBlockN + 8;  // row stride of the dS tile in shared memory
};

// Queries per step: fewer as d grows, so that dK and dV (2 x d/8 fragments per thread) stay in
// registers without spills (ptxas: d = 128 spilled with 32).
template <int D>
constexpr int bwd_block_m() {
  return D <= 64 ? 64 : (D <= 96 ? 32 : 16);
}

template <int D>
constexpr int bwd_smem_bytes() {
  constexpr int M = bwd_block_m<D>();
  return (2 * BwdConfig::kBlockN + 2 * M) * TileRow<D>::kStride * 2 + M * BwdConfig::kStrideS * 2 + 2 * M * 4;
}

template <typename T>
__global__ void __launch_bounds__(128) attention_bwd_delta_kernel(const T* dout, Strides3 dos, const T* out,
                                                                  Strides3 os, float* delta, int H, int N, int d,
                                                                  int64_t rows) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t bh = row / N;
  const int n = static_cast<int>(row % N);
  const T* a = dout + (bh / H) * dos.b + (bh % H) * dos.h + n * dos.n;
  const T* o = out + (bh / H) * os.b + (bh % H) * os.h + n * os.n;
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += mma::Elem<T>::to_float(a[c]) * mma::Elem<T>::to_float(o[c]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[row] = s;
}

// acc[db] += A · B[:, db] for every n8 block db of d: the A operand is packed from float C-fragments
// f (keys as rows, kMB n8 blocks of queries, two per k16 step), B is a [query][d] tile in shared
// memory. dV += Pᵀ dO and dK += dSᵀ Q are both this product.
template <typename T, int S, int kMB, int kDB>
__device__ __forceinline__ void mma_frags_times_tile(float (&acc)[kDB][4], const float (&f)[kMB][4], uint32_t tile,
                                                     int lane) {
  using E = mma::Elem<T>;
#pragma unroll
  for (int kb = 0; kb < kMB / 2; ++kb) {
    uint32_t a[4];
    a[0] = E::pack(f[2 * kb][0], f[2 * kb][1]);
    a[1] = E::pack(f[2 * kb][2], f[2 * kb][3]);
    a[2] = E::pack(f[2 * kb + 1][0], f[2 * kb + 1][1]);
    a[3] = E::pack(f[2 * kb + 1][2], f[2 * kb + 1][3]);
#pragma unroll
    for (int db = 0; db < kDB; db += 2) {
      uint32_t bf[4];
      mma::ldmatrix_x4_trans(bf, frag_b_kn_addr<S>(tile, kb * 16, db * 8, lane));
      mma::mma_f32(acc[db], a, bf[0], bf[1], T());
      mma::mma_f32(acc[db + 1], a, bf[2], bf[3], T());
    }
  }
}

template <typename T, int D, bool kF16Acc>
__global__ void __launch_bounds__(BwdConfig::kThreads) attention_bwd_kernel(const AttnBwdParams p) {
  using C = BwdConfig;
  using E = mma::Elem<T>;
  constexpr int S = TileRow<D>::kStride;
  constexpr int SS = C::kStrideS;
  constexpr int M = bwd_block_m<D>();
  constexpr int kMB = M / 8;   // n8 blocks of queries in Sᵀ
  constexpr int kDB = D / 8;   // n8 blocks of d
  constexpr float kLog2e = 1.4426950408889634f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + C::kBlockN * S;
  T* sQ = sV + C::kBlockN * S;
  T* sdO = sQ + M * S;
  T* sdS = sdO + M * S;  // dS of this query block, [query][key]
  float* sLse = reinterpret_cast<float*>(sdS + M * SS);
  float* sDelta = sLse + M;
  const uint32_t sK_u = mma::smem_addr(sK), sV_u = mma::smem_addr(sV), sQ_u = mma::smem_addr(sQ);
  const uint32_t sdO_u = mma::smem_addr(sdO), sdS_u = mma::smem_addr(sdS);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int N = p.N;
  const int bh = p.bh_offset + blockIdx.y;
  const int b = bh / p.H, h = bh % p.H;
  const int n0 = blockIdx.x * C::kBlockN;
  const T* q = static_cast<const T*>(p.q) + b * p.qs.b + h * p.qs.h;
  const T* k = static_cast<const T*>(p.k) + b * p.ks.b + h * p.ks.h;
  const T* v = static_cast<const T*>(p.v) + b * p.vs.b + h * p.vs.h;
  const T* dout = static_cast<const T*>(p.dout) + b * p.dos.b + h * p.dos.h;
  const T* bias = p.bias ? static_cast<const T*>(p.bias) + b * p.bias_s.b + h * p.bias_s.h : nullptr;
  const T* dlogits = p.dlogits ? static_cast<const T*>(p.dlogits) + static_cast<int64_t>(bh) * N * N : nullptr;
  float* dbias = p.dbias_accum ? p.dbias_accum + b * p.dbias_s.b + h * p.dbias_s.h : nullptr;
  const float* lse = p.lse + static_cast<int64_t>(bh) * N;
  const float* delta = p.delta + static_cast<int64_t>(bh) * N;
  float* dq = p.dq_accum + static_cast<int64_t>(bh) * N * D;

  load_tile_async<D, C::kBlockN, C::kThreads, false>(sK, k, p.ks.n, n0, N, tid);
  load_tile_async<D, C::kBlockN, C::kThreads, false>(sV, v, p.vs.n, n0, N, tid);
  mma::cp_async_commit();

  float dk[kDB][4], dv[kDB][4];
#pragma unroll
  for (int i = 0; i < kDB; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;
  }
  const int key_g = n0 + warp * 16 + g;  // this thread's two keys: key_g and key_g + 8

  const int m_blocks = (N + M - 1) / M;
  for (int i = 0; i < m_blocks; ++i) {
    const int q0 = i * M;
    load_tile_async<D, M, C::kThreads, false>(sQ, q, p.qs.n, q0, N, tid);
    load_tile_async<D, M, C::kThreads, false>(sdO, dout, p.dos.n, q0, N, tid);
    mma::cp_async_commit();
    if (tid < M) {
      sLse[tid] = q0 + tid < N ? lse[q0 + tid] : 0.f;
      sDelta[tid] = q0 + tid < N ? delta[q0 + tid] : 0.f;
    }
    mma::cp_async_wait<0>();
    __syncthreads();

    // Sᵀ = K Qᵀ (this warp's 16 keys x M queries), accumulated as the forward did.
    float pt[kMB][4];
    {
      mma::Acc<T, kF16Acc> st[kMB];
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) st[mb].zero();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t ka[4];
        mma::ldmatrix_x4(ka, frag_a_addr<S>(sK_u, warp * 16, kk * 16, lane));
#pragma unroll
        for (int mb = 0; mb < kMB; mb += 2) {
          uint32_t bf[4];
          mma::ldmatrix_x4(bf, frag_b_nk_addr<S>(sQ_u, mb * 8, kk * 16, lane));
          st[mb].mma(ka, bf[0], bf[1]);
          st[mb + 1].mma(ka, bf[2], bf[3]);
        }
      }
      // Pᵀ = exp(s - lse), zero outside the N x N square.
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key_g + (e >> 1) * 8;
          const int qi = mb * 8 + 2 * t + (e & 1);
          const bool in = key < N && q0 + qi < N;
          float x = st[mb].get(e) * p.scale;
          if (bias != nullptr && in) x += E::to_float(bias[(q0 + qi) * p.bias_s.n + key * p.bias_col]);
          pt[mb][e] = in ? exp2f(x * kLog2e - sLse[qi] * kLog2e) : 0.f;
        }
      }
    }
    // dV += Pᵀ dO.
    mma_frags_times_tile<T, S>(dv, pt, sdO_u, lane);
    // dPᵀ = V dOᵀ.
    float ds[kMB][4];
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) ds[mb][0] = ds[mb][1] = ds[mb][2] = ds[mb][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t va[4];
      mma::ldmatrix_x4(va, frag_a_addr<S>(sV_u, warp * 16, kk * 16, lane));
#pragma unroll
      for (int mb = 0; mb < kMB; mb += 2) {
        uint32_t bf[4];
        mma::ldmatrix_x4(bf, frag_b_nk_addr<S>(sdO_u, mb * 8, kk * 16, lane));
        mma::mma_f32(ds[mb], va, bf[0], bf[1], T());
        mma::mma_f32(ds[mb + 1], va, bf[2], bf[3], T());
      }
    }
    // dSᵀ = Pᵀ ∘ (dPᵀ - delta) + dlogitsᵀ; dbias; dS into shared memory for dQ.
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_g + (e >> 1) * 8;
        const int qi = mb * 8 + 2 * t + (e & 1);
        const bool in = key < N && q0 + qi < N;
        float x = pt[mb][e] * (ds[mb][e] - sDelta[qi]);
        if (dlogits != nullptr && in) x += E::to_float(dlogits[static_cast<int64_t>(q0 + qi) * N + key]);
        x = in ? x : 0.f;
        if (dbias != nullptr && in) atomicAdd(dbias + static_cast<int64_t>(q0 + qi) * N + key, x);
        ds[mb][e] = x;
        sdS[qi * SS + (key - n0)] = E::from_float(x);
      }
    }
    // dK += dSᵀ Q (scaled at the end).
    mma_frags_times_tile<T, S>(dk, ds, sQ_u, lane);
    __syncthreads();  // the dS tile is complete
    // dQ[q0 : q0 + M] += dS K · scale: (M/16) x (D/16) tiles of 16 x 16 spread over the warps.
    constexpr int kTilesD = D / 16;
    for (int tile = warp; tile < (M / 16) * kTilesD; tile += C::kWarps) {
      const int mq = tile / kTilesD, dd = tile % kTilesD;
      float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int kk = 0; kk < C::kBlockN / 16; ++kk) {
        uint32_t a[4], bf[4];
        mma::ldmatrix_x4(a, frag_a_addr<SS>(sdS_u, mq * 16, kk * 16, lane));
        mma::ldmatrix_x4_trans(bf, frag_b_kn_addr<S>(sK_u, kk * 16, dd * 16, lane));
        mma::mma_f32(c0, a, bf[0], bf[1], T());
        mma::mma_f32(c1, a, bf[2], bf[3], T());
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = q0 + mq * 16 + g + (e >> 1) * 8;
        if (row < N) {
          float* dst = dq + static_cast<int64_t>(row) * D + dd * 16 + 2 * t + (e & 1);
          atomicAdd(dst, c0[e] * p.scale);
          atomicAdd(dst + 8, c1[e] * p.scale);
        }
      }
    }
    __syncthreads();  // before the next query block overwrites sQ, sdO, sdS, sLse, sDelta
  }

  T* dk_out = static_cast<T*>(p.dk) + static_cast<int64_t>(bh) * N * D;
  T* dv_out = static_cast<T*>(p.dv) + static_cast<int64_t>(bh) * N * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_g + r * 8;
    if (key >= N) continue;
#pragma unroll
    for (int db = 0; db < kDB; ++db) {
      const int64_t off = static_cast<int64_t>(key) * D + db * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(dk_out + off) = E::pack(dk[db][2 * r] * p.scale, dk[db][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_out + off) = E::pack(dv[db][2 * r], dv[db][2 * r + 1]);
    }
  }
}

}  // namespace vitfast
