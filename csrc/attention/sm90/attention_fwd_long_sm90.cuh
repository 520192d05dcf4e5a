#pragma once
// Hopper forward attention for N > 256 (N = 577 at 384 x 384, 257 at patch 14): K and V stream
// through shared memory in key tiles sized to N, the softmax is online (a running row maximum,
// O and the row sum rescaled when it grows), P stays in registers as the A operand of O = P V.
// sm_90a only (wgmma, TMA, setmaxnreg).
//
// Key tiles: N's 64-key chunks split evenly over the fewest tiles of at most kChunks chunks
// (N = 577: 10 chunks as 4 + 3 + 3 at d = 64; N = 257 at d = 80: 3 + 2), so no tile is a sliver and
// only the last chunk of the last tile holds columns past N (TMA fills them with zeros; the softmax
// masks them).
//
// A persistent CTA of three warpgroups walks tiles of (batch·head, 128 query rows):
//   warpgroup 0, one thread: the producer. TMA loads of the tile's two 64-row Q halves (two Q stages,
//     so the next tile's Q lands during this one), then of each key tile's K chunks (one barrier)
//     and V chunks (a second barrier, so q kᵀ starts before V lands) into two K/V stages.
//   warpgroups 1 and 2: 64 query rows each. Per key tile: Q's wgmma A fragments by ldmatrix,
//     S = Q Kᵀ by n64 register-operand wgmmas, one per chunk, the row maximum and sum updated, O
//     rescaled, O += P V by register-operand wgmmas; then O / l staged in the Q half it came from and
//     written by a TMA store, which clips rows past N.
//
// kF16Acc (accumulate="fp16", float16 only): S and O accumulate in wgmma's fp16 registers (two
// columns per register), widened to fp32 for the softmax and the epilogue; O's rescale rounds to
// fp16. This kernel takes such calls at every N: its key tiles cover N <= 256 in one tile.
#include "attention/attention_params.h"
#include "attention/mma.cuh"
#include "attention/sm90/attention_fwd_sm90.cuh"
#include "attention/sm90/sm90_util.cuh"
#include "cute/arch/cluster_sm90.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

namespace vitfast::attention::sm90 {

using namespace cute;

// 64-key chunks per key tile: as many as the S registers (32 per chunk) and two K/V stages in shared
// memory allow next to O (D / 2 registers) and Q's fragments (D / 4).
template <int D>
constexpr int long_fwd_chunks() {
  return D <= 64 ? 4 : D <= 96 ? 3 : 2;
}

template <class T, int D>
struct FwdLongTraits {
  // One 64-row tile of q, k or out and one (d, 64) tile of V: the short kernel's at 64 keys, so the
  // TMA and wgmma types are its types.
  using Chunk = FwdTraits<T, D, 64>;
  static constexpr int kRows = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kTileRows = kRows * kConsumers;
  static constexpr int kChunks = long_fwd_chunks<D>();
  static constexpr int kKeys = 64 * kChunks;  // the widest key tile
  static constexpr int kQStages = 2;
  static constexpr int kKvStages = 2;
  static constexpr int kChunkBytes = 64 * D * 2;

  using SmemLayoutRows = typename Chunk::SmemLayoutQ;  // (64, d), K-major: a Q half, a K chunk, an O half
  using SmemLayoutVt = typename Chunk::SmemLayoutVt;   // (d, 64), MN-major: a V chunk
  using TiledMmaS = typename Chunk::TiledMmaS64;
  using TiledMmaO = typename Chunk::TiledMmaO;
  using TmaRows = typename Chunk::TmaQ;
  using TmaV = typename Chunk::TmaV;
  using TmaO = typename Chunk::TmaO;

  struct Shared {
    alignas(1024) T q[kQStages][kConsumers][kRows * D];  // each half also stages its rows of O for the store
    alignas(1024) T k[kKvStages][kChunks][64 * D];
    alignas(1024) T v[kKvStages][kChunks][64 * D];
    alignas(8) uint64_t full_q[kQStages];   // both Q halves landed
    uint64_t empty_q[kQStages];             // both consumers done, O's stores have read their staging
    uint64_t full_k[kKvStages];             // a key tile's K chunks landed
    uint64_t full_v[kKvStages];             // its V chunks landed
    uint64_t empty_kv[kKvStages];           // every consumer warp's wgmmas have read them
  };
  static constexpr int kSmemBytes = int(sizeof(Shared)) + 1024;  // + the alignment of the dynamic base
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than a CTA may hold");
  static constexpr int kConsumerWarps = 4 * kConsumers;
};

template <class T, int D>
struct FwdLongParams90 {
  using Tr = FwdLongTraits<T, D>;
  typename Tr::TmaRows tma_q;
  typename Tr::TmaRows tma_k;
  typename Tr::TmaV tma_v;
  typename Tr::TmaO tma_o;
  const T* bias;        // nullptr when there is none
  Strides3 bias_s;      // 0 along broadcast dims
  int64_t bias_col;
  float* lse;           // (B, H, N) or nullptr when no backward will read it
  int B, H, N;
  int m_blocks;         // ceil(N / 128)
  int tiles;            // B · H · m_blocks
  int chunks;           // ceil(N / 64)
  int key_tiles;        // ceil(chunks / kChunks)
  float scale_log2;     // scale · log2(e)
};

// Key tile j of a head: its first chunk and its chunk count (chunks split evenly, the first
// chunks % key_tiles tiles one wider).
struct KeyTile {
  int c0, n;
};
__device__ __forceinline__ KeyTile key_tile(int j, int chunks, int key_tiles) {
  const int base = chunks / key_tiles, extra = chunks % key_tiles;
  return {j * base + min(j, extra), base + (j < extra ? 1 : 0)};
}

template <class T, int D, bool kF16Acc>
__global__ void __launch_bounds__(FwdLongTraits<T, D>::kThreads, 1)
    attention_fwd_long_sm90_kernel(const __grid_constant__ FwdLongParams90<T, D> p) {
  using Tr = FwdLongTraits<T, D>;
  constexpr int kChunks = Tr::kChunks;
  static_assert(!kF16Acc || std::is_same_v<T, cutlass::half_t>, "fp16 accumulators take float16 operands");
  // The wgmmas' accumulator type, and a register's share of a row: one fp32 or two fp16 columns.
  using Acc = std::conditional_t<kF16Acc, cutlass::half_t, float>;
  using R = std::conditional_t<kF16Acc, uint32_t, float>;
  constexpr int kPer = kF16Acc ? 2 : 1;
  using MmaS = decltype(SM90::GMMA::rs_op_selector<T, T, Acc, Shape<_64, _64, _16>>());
  using MmaO = decltype(SM90::GMMA::rs_op_selector<T, T, Acc, Shape<_64, Int<D>, _16>, GMMA::Major::K,
                                                   GMMA::Major::MN>());
  extern __shared__ char smem_raw[];
  auto& sh = aligned_shared<typename Tr::Shared>(smem_raw);

  const int wg = threadIdx.x / 128;
  const int lane_wg = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < Tr::kQStages; ++s) {
      cutlass::arch::ClusterTransactionBarrier::init(&sh.full_q[s], 1);
      cutlass::arch::ClusterBarrier::init(&sh.empty_q[s], Tr::kConsumers);
    }
    for (int s = 0; s < Tr::kKvStages; ++s) {
      cutlass::arch::ClusterTransactionBarrier::init(&sh.full_k[s], 1);
      cutlass::arch::ClusterTransactionBarrier::init(&sh.full_v[s], 1);
      cutlass::arch::ClusterBarrier::init(&sh.empty_kv[s], Tr::kConsumerWarps);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int N = p.N;
  if (wg == 0) {  // ---- producer
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (lane_wg != 0) return;
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    Tensor mQ = p.tma_q.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mK = p.tma_k.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mVt = p.tma_v.get_tma_tensor(make_shape(D, N, p.H, p.B));
    const auto rows = Shape<Int<64>, Int<D>>{};
    const auto cols = Shape<Int<D>, Int<64>>{};
    int it = 0, kv_it = 0;
    for (int tile = blockIdx.x; tile < p.tiles; tile += gridDim.x, ++it) {
      const int qs = it % Tr::kQStages, q_phase = (it / Tr::kQStages) & 1;
      const int bh = tile / p.m_blocks, mb = tile % p.m_blocks;
      const int b = bh / p.H, h = bh % p.H;
      cutlass::arch::ClusterBarrier::wait(&sh.empty_q[qs], q_phase ^ 1);
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&sh.full_q[qs],
                                                                     Tr::kConsumers * Tr::kChunkBytes);
      for (int half = 0; half < Tr::kConsumers; ++half) {
        tma_load_tile(p.tma_q, mQ, rows, mb * Tr::kConsumers + half, h, b, sh.q[qs][half],
                      typename Tr::SmemLayoutRows{}, sh.full_q[qs]);
      }
      for (int j = 0; j < p.key_tiles; ++j, ++kv_it) {
        const int st = kv_it % Tr::kKvStages, phase = (kv_it / Tr::kKvStages) & 1;
        const KeyTile kt = key_tile(j, p.chunks, p.key_tiles);
        cutlass::arch::ClusterBarrier::wait(&sh.empty_kv[st], phase ^ 1);
        cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&sh.full_k[st], kt.n * Tr::kChunkBytes);
        for (int c = 0; c < kt.n; ++c) {
          tma_load_tile(p.tma_k, mK, rows, kt.c0 + c, h, b, sh.k[st][c], typename Tr::SmemLayoutRows{},
                        sh.full_k[st]);
        }
        cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&sh.full_v[st], kt.n * Tr::kChunkBytes);
        for (int c = 0; c < kt.n; ++c) {
          tma_load_tile(p.tma_v, mVt, cols, make_coord(0, kt.c0 + c), h, b, sh.v[st][c],
                        typename Tr::SmemLayoutVt{}, sh.full_v[st]);
        }
      }
    }
    return;
  }

  // ---- consumers
  cutlass::arch::warpgroup_reg_alloc<240>();
  const int cw = wg - 1;  // which 64-row half of the tile
  const int warp = lane_wg / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // accumulator element (g, 2t): rows g and g + 8
  typename Tr::TiledMmaS mma_s;
  typename Tr::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(lane_wg);
  auto thr_o = mma_o.get_thread_slice(lane_wg);
  Tensor mO = p.tma_o.get_tma_tensor(make_shape(N, D, p.H, p.B));
  auto release_kv = [&](int st) {
    if (lane == 0) cutlass::arch::ClusterBarrier::arrive(&sh.empty_kv[st]);
  };

  // S, then P: the element (g + 8 (e / 2), 8 j + 2 t + e % 2) of a key tile at s[4 j + e]; O the same
  // way. The wgmmas accumulate in s_acc and o_acc: s and o themselves, or with fp16 accumulators
  // s16 and o16 (element i / 2 of register i's pair). Zeroed before their first wgmma (zero_fenced).
  float s[kChunks * 32];
  float o[D / 2];
  [[maybe_unused]] uint32_t s16[kChunks * 16], o16[D / 4];
  auto& s_acc = pick<kF16Acc>(s16, s);
  auto& o_acc = pick<kF16Acc>(o16, o);
  int it = 0, kv_it = 0;
  for (int tile = blockIdx.x; tile < p.tiles; tile += gridDim.x, ++it) {
    const int qs = it % Tr::kQStages, q_phase = (it / Tr::kQStages) & 1;
    const int bh = tile / p.m_blocks, mb = tile % p.m_blocks;
    const int b = bh / p.H, h = bh % p.H;
    const int row0 = (mb * Tr::kConsumers + cw) * Tr::kRows;  // first query row of this warpgroup
    Tensor sQ = make_tensor(make_smem_ptr(sh.q[qs][cw]), typename Tr::SmemLayoutRows{});
    if (row0 >= N) {
      // The tile's second half lies past N: nothing to compute, but the K/V stages are released
      // by every consumer warp, so this one follows the loads as they land.
      for (int j = 0; j < p.key_tiles; ++j, ++kv_it) {
        const int st = kv_it % Tr::kKvStages, phase = (kv_it / Tr::kKvStages) & 1;
        cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_k[st], phase);
        cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_v[st], phase);
        release_kv(st);
      }
      cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_q[qs], q_phase);
      if (lane_wg == 0) cutlass::arch::ClusterBarrier::arrive(&sh.empty_q[qs]);
      continue;
    }

    cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_q[qs], q_phase);
    const int row_a = row0 + warp * 16 + g;  // this thread's rows: row_a and row_a + 8
    const T* bias_row[2] = {nullptr, nullptr};
    if (p.bias != nullptr) {
      const T* base = p.bias + b * p.bias_s.b + h * p.bias_s.h;
      bias_row[0] = base + int64_t(min(row_a, N - 1)) * p.bias_s.n;  // rows past N: clipped by the store
      bias_row[1] = base + int64_t(min(row_a + 8, N - 1)) * p.bias_s.n;
    }

    float m[2] = {-INFINITY, -INFINITY};  // running row maxima of the logits (log2 units)
    float l[2] = {0.f, 0.f};              // this thread's share of the running row sums
    zero_fenced(o_acc);
    for (int j = 0; j < p.key_tiles; ++j, ++kv_it) {
      const int st = kv_it % Tr::kKvStages, phase = (kv_it / Tr::kKvStages) & 1;
      const KeyTile kt = key_tile(j, p.chunks, p.key_tiles);
      cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_k[st], phase);
      // This warp's 16 rows of Q as wgmma A fragments (the mma.sync m16n8k16 A layout), by ldmatrix:
      // read again for each key tile rather than held through the softmax (D / 4 registers).
      uint32_t qf[D / 16][4];
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        mma::ldmatrix_x4(qf[kk], mma::smem_addr(&sQ(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8)));
      }
      zero_fenced(s_acc);
      wgmma_batch<kChunks>(kt.n, [&](auto c) {
        Tensor dk = thr_s.partition_fragment_B(
            make_tensor(make_smem_ptr(sh.k[st][c]), typename Tr::SmemLayoutRows{}));  // (1, 1, D / 16)
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          R(&acc)[32 / kPer] = *reinterpret_cast<R(*)[32 / kPer]>(&s_acc[32 / kPer * c]);
          wgmma_call<MmaS>(qf[kk], uint64_t(dk(_0{}, _0{}, kk)), acc,
                           kk == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One, std::make_index_sequence<32 / kPer>{});
        }
      });
      warpgroup_wait<0>();
      fence(s_acc);
      if constexpr (kF16Acc) unpack_half2(s16, s);

      // Logits in log2 units, y = s · scale · log2(e) + bias · log2(e); columns past N (only in the
      // head's last chunk) -inf. Chunks past this tile's width are skipped: still 0, P's zeros.
      const int key0 = kt.c0 * 64;
      const bool last_tile = j == p.key_tiles - 1;
      float mx[2] = {m[0], m[1]};
      auto logits = [&](auto with_bias, auto masked, auto c) {
        // This thread's column 8 jj + (e & 1) of chunk c is key col0 + 8 jj + (e & 1): the mask a
        // compare with a constant, the bias read through four pointers (two rows, two parities)
        // stepped 8 columns at a time, not a 64-bit product per element.
        const int col0 = key0 + c * 64 + 2 * t;
        const int lim = N - col0;
        [[maybe_unused]] const T* bp[2][2];
        if constexpr (decltype(with_bias)::value) {
#pragma unroll
          for (int e = 0; e < 4; ++e) bp[e >> 1][e & 1] = bias_row[e >> 1] + int64_t(col0 + (e & 1)) * p.bias_col;
        }
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = c * 32 + jj * 4 + e;
            const bool in = !decltype(masked)::value || jj * 8 + (e & 1) < lim;
            float y = s[i] * p.scale_log2;
            if constexpr (decltype(with_bias)::value) {
              if (in) y = fmaf(float(*bp[e >> 1][e & 1]), 1.4426950408889634f, y);
              bp[e >> 1][e & 1] += 8 * p.bias_col;
            }
            if constexpr (decltype(masked)::value) y = in ? y : -INFINITY;
            s[i] = y;
            mx[e >> 1] = fmaxf(mx[e >> 1], y);
          }
        }
      };
      auto all_logits = [&](auto with_bias) {
        static_for<kChunks>([&](auto c) {
          if (c < kt.n) {
            if (last_tile && c == kt.n - 1) {
              logits(with_bias, std::true_type{}, c);
            } else {
              logits(with_bias, std::false_type{}, c);
            }
          }
        });
      };
      if (p.bias != nullptr) {
        all_logits(std::true_type{});
      } else {
        all_logits(std::false_type{});
      }

      // The new maxima; O and the row sums rescaled by 2^(old - new) where they grew.
      float m_use[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        // A row of -inf logits so far: its p are 0 (out = 0/0 at the end, as eager's).
        m_use[r] = mx[r] == -INFINITY ? 0.f : mx[r];
        const float alpha = m[r] == -INFINITY ? 0.f : mma::ex2_ftz(m[r] - m_use[r]);
        m[r] = mx[r];
        l[r] *= alpha;
#pragma unroll
        for (int jd = 0; jd < D / 8; ++jd) {
          if constexpr (kF16Acc) {
            o16[jd * 2 + r] = scale_half2(o16[jd * 2 + r], alpha);
          } else {
            o[jd * 4 + 2 * r] *= alpha;
            o[jd * 4 + 2 * r + 1] *= alpha;
          }
        }
      }
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        if (c < kt.n) {
#pragma unroll
          for (int i = 0; i < 32; ++i) {
            const float pe = mma::ex2_ftz(s[c * 32 + i] - m_use[(i >> 1) & 1]);
            s[c * 32 + i] = pe;
            l[(i >> 1) & 1] += pe;
          }
        }
      }

      // O += P V, all of P packed before the first wgmma (no register a wgmma in flight reads is
      // written under it).
      uint32_t pf[kChunks * 4][4];
      pack_a_frags<T>(s, pf);
      cutlass::arch::ClusterTransactionBarrier::wait(&sh.full_v[st], phase);
      fence(o_acc);
      wgmma_batch<kChunks>(kt.n, [&](auto c) {
        Tensor dv = thr_o.partition_fragment_B(
            make_tensor(make_smem_ptr(sh.v[st][c]), typename Tr::SmemLayoutVt{}));  // (1, 1, 4)
#pragma unroll
        for (int kb = 0; kb < 4; ++kb) {
          wgmma_call<MmaO>(pf[c * 4 + kb], uint64_t(dv(_0{}, _0{}, kb)), o_acc, GMMA::ScaleOut::One,
                           std::make_index_sequence<D / 2 / kPer>{});
        }
      });
      warpgroup_wait<0>();
      fence(o_acc);
      release_kv(st);
    }
    if constexpr (kF16Acc) unpack_half2(o16, o);

    const float m_use[2] = {m[0] == -INFINITY ? 0.f : m[0], m[1] == -INFINITY ? 0.f : m[1]};
    store_o_rows<T, D>(o, l, m_use, sQ, p.tma_o, mO, p.lse == nullptr ? nullptr : p.lse + int64_t(bh) * N, row0, N, h,
                       b, cw, sh.empty_q[qs]);
  }
  if (lane_wg == 0) tma_store_wait<0>();
}

}  // namespace vitfast::attention::sm90
