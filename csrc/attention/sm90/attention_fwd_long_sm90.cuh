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
#include "attention/sm90/attention_protocol.h"
#include "attention/sm90/sm90_sync.cuh"
#include "attention/sm90/sm90_util.cuh"
#include "cute/arch/cluster_sm90.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

namespace vitfast::attention::sm90 {

using namespace cute;

template <class T, int D>
struct FwdLongTraits {
  // One 64-row tile of q, k or out and one (d, 64) tile of V: the short kernel's at 64 keys, so the
  // TMA and wgmma types are its types.
  using Chunk = FwdTraits<T, D, 64>;
  static constexpr int kRows = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kTileRows = kRows * kConsumers;
  using Config = protocol::FwdLongConfig<D>;
  static constexpr int kChunks = Config::kChunks;  // 64-key chunks per key tile
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

  // The stages' barriers and who waits, arrives and fills (attention_protocol.h); every box is one
  // 64-row (or 64-key) tile.
  using Protocol = typename Config::Protocol;
  static_assert(Config::kChunkBox == kChunkBytes, "chunk bytes differ");
  static_assert(Protocol::kQStages == kQStages && Protocol::kKvStages == kKvStages, "stages differ");
  static_assert(int(cosize_v<SmemLayoutRows>) * 2 == kChunkBytes && int(cosize_v<SmemLayoutVt>) * 2 == kChunkBytes,
                "the protocol's transaction bytes are not the TMA boxes'");

  struct Shared {
    alignas(1024) T q[kQStages][kConsumers][kRows * D];  // each half also stages its rows of O for the store
    alignas(1024) T k[kKvStages][kChunks][64 * D];
    alignas(1024) T v[kKvStages][kChunks][64 * D];
    alignas(8) typename Protocol::template Bars<uint64_t> bars;
  };
  static constexpr int kSmemBytes = int(sizeof(Shared)) + 1024;  // + the alignment of the dynamic base
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than a CTA may hold");
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
  using Protocol = typename Tr::Protocol;
  using protocol::KeyTile;
  extern __shared__ char smem_raw[];
  auto& sh = aligned_shared<typename Tr::Shared>(smem_raw);

  const int wg = threadIdx.x / 128;
  const int lane_wg = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    ProducerSync<Protocol> sync{{-1, &sh.bars}};
    Protocol::init(sync, sh.bars);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int N = p.N;
  const GridWalk walk{p.tiles};
  const typename Protocol::template ShapeOf<const int&> shape{p.N, p.m_blocks, p.chunks, p.key_tiles};
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
    ProducerSync<Protocol> sync{{-1, &sh.bars}};
    Protocol::producer(sync, sh.bars, walk, shape,
                       protocol::LoadQKV{
                           [&](uint64_t& bar, int tile, int qs, int half) {
                             const int bh = tile / p.m_blocks, mb = tile % p.m_blocks;
                             tma_load_tile(p.tma_q, mQ, rows, mb * Tr::kConsumers + half, bh % p.H, bh / p.H,
                                           sh.q[qs][half], typename Tr::SmemLayoutRows{}, bar);
                           },
                           [&](uint64_t& bar, int tile, int st, int slot, int chunk) {
                             const int bh = tile / p.m_blocks;
                             tma_load_tile(p.tma_k, mK, rows, chunk, bh % p.H, bh / p.H, sh.k[st][slot],
                                           typename Tr::SmemLayoutRows{}, bar);
                           },
                           [&](uint64_t& bar, int tile, int st, int slot, int chunk) {
                             const int bh = tile / p.m_blocks;
                             tma_load_tile(p.tma_v, mVt, cols, make_coord(0, chunk), bh % p.H, bh / p.H,
                                           sh.v[st][slot], typename Tr::SmemLayoutVt{}, bar);
                           }});
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

  // S, then P: the element (g + 8 (e / 2), 8 j + 2 t + e % 2) of a key tile at s[4 j + e]; O the same
  // way. The wgmmas accumulate in s_acc and o_acc: s and o themselves, or with fp16 accumulators
  // s16 and o16 (element i / 2 of register i's pair). Zeroed before their first wgmma (zero_fenced).
  float s[kChunks * 32];
  float o[D / 2];
  [[maybe_unused]] uint32_t s16[kChunks * 16], o16[D / 4];
  auto& s_acc = pick<kF16Acc>(s16, s);
  auto& o_acc = pick<kF16Acc>(o16, o);
  uint32_t pf[kChunks * 4][4];          // P packed as O += P V's A operand
  float m[2];                           // running row maxima of the logits (log2 units)
  float l[2];                           // this thread's share of the running row sums
  const T* bias_row[2];                 // this thread's rows of the bias (b, h)
  int row_a = 0;                        // this thread's rows: row_a and row_a + 8
  Tensor sQ = make_tensor(make_smem_ptr(sh.q[0][cw]), typename Tr::SmemLayoutRows{});

  auto begin = [&](int tile, int qs, int row0) {
    const int bh = tile / p.m_blocks;
    const int b = bh / p.H, h = bh % p.H;
    sQ = make_tensor(make_smem_ptr(sh.q[qs][cw]), typename Tr::SmemLayoutRows{});
    row_a = row0 + warp * 16 + g;
    bias_row[0] = bias_row[1] = nullptr;
    if (p.bias != nullptr) {
      const T* base = p.bias + b * p.bias_s.b + h * p.bias_s.h;
      bias_row[0] = base + int64_t(min(row_a, N - 1)) * p.bias_s.n;  // rows past N: clipped by the store
      bias_row[1] = base + int64_t(min(row_a + 8, N - 1)) * p.bias_s.n;
    }
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
    zero_fenced(o_acc);
  };

  // Key tile j (chunks kt.c0 .. + kt.n) in K/V stage st: S = Q Kᵀ, the online softmax, O rescaled, P packed.
  auto scores = [&](int j, int st, KeyTile kt) {
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
    // All of P packed before the first wgmma (no register a wgmma in flight reads is written under it).
    pack_a_frags<T>(s, pf);
  };

  // O += P V over the key tile's V chunks in stage st.
  auto values = [&](int st, KeyTile kt) {
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
  };

  auto store = [&](int tile, int qs, int row0) {
    if constexpr (kF16Acc) unpack_half2(o16, o);
    const int bh = tile / p.m_blocks;
    const float m_use[2] = {m[0] == -INFINITY ? 0.f : m[0], m[1] == -INFINITY ? 0.f : m[1]};
    store_o_rows<T, D>(o, l, m_use, sQ, p.tma_o, mO, p.lse == nullptr ? nullptr : p.lse + int64_t(bh) * N, row0, N,
                       bh % p.H, bh / p.H, cw);
  };

  ConsumerSync<Protocol> sync{{cw, &sh.bars}};
  Protocol::consumer(sync, sh.bars, walk, shape, cw, protocol::FwdLongBody{begin, scores, values, store});
}

}  // namespace vitfast::attention::sm90
