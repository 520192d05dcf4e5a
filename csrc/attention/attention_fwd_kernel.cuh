#pragma once
// Forward attention, FlashAttention-2 style, with mma.sync m16n8k16 (sm_80 and sm_90).
//
// One block: 4 warps, 64 query rows (16 per warp, held in registers as A fragments), looping over
// the keys in tiles of 64 with an online softmax (running max m and sum l per row, O rescaled when
// m grows). The last key tile is cut at 16-row granularity: products over key rows past N are
// skipped, so N = 197 costs 208 rows of work, not 256. K and V tiles come by cp.async in two groups,
// so V's copy overlaps q kᵀ and the softmax, and the next K's overlaps p v.
#include <cmath>
#include <type_traits>

#include "attention/attention_params.h"
#include "attention/attention_tile.cuh"

namespace vitfast {

struct FwdConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;  // query rows per block
  static constexpr int kBlockN = 64;           // key rows per tile
};

template <int D>
constexpr int fwd_smem_bytes() {
  return (FwdConfig::kBlockM + 2 * FwdConfig::kBlockN) * TileRow<D>::kStride * 2;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// kExtras: a bias, the logits output, or a scale <= 0 (the host decides). Without them the logits
// never leave registers: the row maximum is taken over the raw q kᵀ (scale > 0 keeps its order) and
// each probability is one FFMA, s · scale · log2(e) - m · scale · log2(e), then ex2. Only the last
// key tile masks columns past N.
template <typename T, int D, bool kF16Acc, bool kExtras>
__global__ void __launch_bounds__(FwdConfig::kThreads, 1) attention_fwd_kernel(const AttnFwdParams p) {
  using C = FwdConfig;
  using E = mma::Elem<T>;
  constexpr int S = TileRow<D>::kStride;
  constexpr int kNB = C::kBlockN / 8;  // n8 blocks of logits per tile
  constexpr int kDB = D / 8;           // n8 blocks of the output
  constexpr float kLog2e = 1.4426950408889634f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + C::kBlockM * S;
  T* sV = sK + C::kBlockN * S;
  const uint32_t sQ_u = mma::smem_addr(sQ), sK_u = mma::smem_addr(sK), sV_u = mma::smem_addr(sV);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int N = p.N;
  const int bh = p.bh_offset + blockIdx.y;
  const int b = bh / p.H, h = bh % p.H;
  const int m0 = blockIdx.x * C::kBlockM;
  const T* q = static_cast<const T*>(p.q) + b * p.qs.b + h * p.qs.h;
  const T* k = static_cast<const T*>(p.k) + b * p.ks.b + h * p.ks.h;
  const T* v = static_cast<const T*>(p.v) + b * p.vs.b + h * p.vs.h;
  const T* bias = kExtras && p.bias ? static_cast<const T*>(p.bias) + b * p.bias_s.b + h * p.bias_s.h : nullptr;
  T* logits = kExtras && p.logits ? static_cast<T*>(p.logits) + static_cast<int64_t>(bh) * N * N : nullptr;
  // The factor from the row's logits to log2 units: scale · log2(e) on raw q kᵀ, log2(e) on scaled ones.
  const float to_log2 = kExtras ? kLog2e : p.scale * kLog2e;

  load_tile_async<D, C::kBlockM, C::kThreads>(sQ, q, p.qs.n, m0, N, tid);
  load_tile_async<D, C::kBlockN, C::kThreads>(sK, k, p.ks.n, 0, N, tid);
  mma::cp_async_commit();
  load_tile_async<D, C::kBlockN, C::kThreads>(sV, v, p.vs.n, 0, N, tid);
  mma::cp_async_commit();

  // Warps whose 16 rows all lie past N only help load and keep the barriers.
  const bool active = m0 + warp * 16 < N;
  const int row_g = m0 + warp * 16 + g;  // this thread's two rows: row_g and row_g + 8
  uint32_t qf[D / 16][4];
  mma::Acc<T, kF16Acc> o[kDB];
#pragma unroll
  for (int i = 0; i < kDB; ++i) o[i].zero();
  // Running max (in the units of the tile's logits: raw without extras) and sum per row.
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

  const int n_tiles = (N + C::kBlockN - 1) / C::kBlockN;
  // One key tile; kLast: the only one that can hold columns past N.
  auto tile = [&](const int j, auto last) {
    constexpr bool kLast = decltype(last)::value;
    const int n0 = j * C::kBlockN;
    const int valid = kLast ? N - n0 : C::kBlockN;
    mma::cp_async_wait<1>();  // Q and this K tile are in; V may still be on its way
    __syncthreads();
    float s[kNB][4];
    if (active) {
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) mma::ldmatrix_x4(qf[kk], frag_a_addr<S>(sQ_u, warp * 16, kk * 16, lane));
      }
      mma::Acc<T, kF16Acc> acc[kNB];
#pragma unroll
      for (int i = 0; i < kNB; ++i) acc[i].zero();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int nb = 0; nb < kNB; nb += 2) {
          if (!kLast || nb * 8 < valid) {  // skip 16-key blocks wholly past N
            uint32_t bf[4];
            mma::ldmatrix_x4(bf, frag_b_nk_addr<S>(sK_u, nb * 8, kk * 16, lane));
            acc[nb].mma(qf[kk], bf[0], bf[1]);
            acc[nb + 1].mma(qf[kk], bf[2], bf[3]);
          }
        }
      }
      // The tile's logits (raw, or scaled + bias and stored with extras), masked past N; row maxima.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nb * 8 + 2 * t + (e & 1);  // within the tile
          float x = acc[nb].get(e);
          if constexpr (kExtras) {
            const int row = row_g + (e >> 1) * 8;
            const bool in = row < N && (!kLast || col < valid);
            x *= p.scale;
            if (bias != nullptr && in) x += E::to_float(bias[row * p.bias_s.n + (n0 + col) * p.bias_col]);
            if (logits != nullptr && in) logits[static_cast<int64_t>(row) * N + n0 + col] = E::from_float(x);
          }
          if (kLast) x = col < valid ? x : -INFINITY;
          s[nb][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
      // Online softmax: rescale what was summed so far to the new running max.
      float alpha[2], m_log2[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float m_new = fmaxf(m_run[r], quad_max(mx[r]));
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row masked so far: exp(-inf - 0) = 0, no NaN
        m_log2[r] = m_use * to_log2;
        alpha[r] = mma::ex2_ftz(fmaf(m_run[r], to_log2, -m_log2[r]));
        m_run[r] = m_new;
        l_run[r] *= alpha[r];
      }
#pragma unroll
      for (int i = 0; i < kDB; ++i) o[i].scale(alpha[0], alpha[1]);
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pe = mma::ex2_ftz(fmaf(s[nb][e], to_log2, -m_log2[e >> 1]));
          s[nb][e] = pe;
          l_run[e >> 1] += pe;  // this thread's part of the row sum; the quad adds up at the end
        }
      }
    }
    mma::cp_async_wait<0>();  // V is in
    __syncthreads();          // and every warp is done with K
    if (!kLast) {
      load_tile_async<D, C::kBlockN, C::kThreads>(sK, k, p.ks.n, n0 + C::kBlockN, N, tid);
      mma::cp_async_commit();
    }
    if (active) {
      // O += P V: the logits' C fragments of two adjacent n8 blocks are the A fragment of one k16 step.
#pragma unroll
      for (int kb = 0; kb < kNB / 2; ++kb) {
        if (!kLast || kb * 16 < valid) {
          uint32_t a[4];
          a[0] = E::pack(s[2 * kb][0], s[2 * kb][1]);
          a[1] = E::pack(s[2 * kb][2], s[2 * kb][3]);
          a[2] = E::pack(s[2 * kb + 1][0], s[2 * kb + 1][1]);
          a[3] = E::pack(s[2 * kb + 1][2], s[2 * kb + 1][3]);
#pragma unroll
          for (int db = 0; db < kDB; db += 2) {
            uint32_t bf[4];
            mma::ldmatrix_x4_trans(bf, frag_b_kn_addr<S>(sV_u, kb * 16, db * 8, lane));
            o[db].mma(a, bf[0], bf[1]);
            o[db + 1].mma(a, bf[2], bf[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with V
    if (!kLast) {
      load_tile_async<D, C::kBlockN, C::kThreads>(sV, v, p.vs.n, n0 + C::kBlockN, N, tid);
      mma::cp_async_commit();
    }
  };
  for (int j = 0; j + 1 < n_tiles; ++j) tile(j, std::false_type{});
  tile(n_tiles - 1, std::true_type{});

  if (!active) return;
  // O / l, and lse = m + log l (natural log of the scaled, biased logits). A row whose logits are
  // all -inf has l = 0: its output is 0/0 = NaN, as the eager softmax gives.
  T* out = static_cast<T*>(p.out) + b * p.os.b + h * p.os.h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_run[r]);
    const int row = row_g + r * 8;
    if (row >= N) continue;
    const float inv = 1.f / l;
#pragma unroll
    for (int db = 0; db < kDB; ++db) {
      const uint32_t packed = E::pack(o[db].get(2 * r) * inv, o[db].get(2 * r + 1) * inv);
      *reinterpret_cast<uint32_t*>(out + row * p.os.n + db * 8 + 2 * t) = packed;
    }
    if (t == 0) {  // m_run is in raw q kᵀ units without extras
      const float m_use = m_run[r] == -INFINITY ? 0.f : (kExtras ? m_run[r] : m_run[r] * p.scale);
      p.lse[static_cast<int64_t>(bh) * N + row] = m_use + logf(l);
    }
  }
}

}  // namespace vitfast
