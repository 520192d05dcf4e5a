#pragma once
// Hopper forward attention for ViT lengths (N <= 256): a whole head's K and V in shared memory, one
// S = q kᵀ tile as wide as N rounded up to 8, an exact-max softmax in one pass, P kept in registers
// as the A operand of O = P V. sm_90a only (wgmma, TMA, setmaxnreg).
//
// A persistent CTA of three warpgroups walks tiles of (batch·head, 128 query rows):
//   warpgroup 0, one thread: the producer. TMA loads of the tile's two 64-row Q halves and the head's
//     K (one barrier) and V (a second barrier, so q kᵀ starts before V lands) into a stage; with two
//     stages the next tile streams in while this one computes.
//   warpgroups 1 and 2: 64 query rows each. S = Q Kᵀ by register-operand wgmma (Q by ldmatrix; W = N
//     rounded up to 8 keys, in 64- and 8-key chunks), softmax in fp32 with ex2.approx, O = P V by
//     register-operand wgmma over ceil(N / 16) key steps, O / l staged in the Q half it came from and
//     written by a TMA store, which clips rows past N.
//   For N <= 64 a tile is one head (one Q half) and the two consumers take alternate tiles, over four
//   stages: each has its next head in flight, and none idles on a half past N.
// TMA's zero fill past N keeps padded keys finite (their probabilities are masked to 0), so no
// element of any tile is bounds-checked except the softmax's column mask.
#include "attention/attention_params.h"
#include "attention/mma.cuh"
#include "attention/sm90/attention_protocol.h"
#include "attention/sm90/sm90_sync.cuh"
#include "attention/sm90/sm90_util.cuh"
#include "cute/arch/cluster_sm90.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

namespace vitfast::attention::sm90 {

using namespace cute;

// T: cutlass::bfloat16_t or cutlass::half_t. kKeys: the widest S tile this instantiation holds (64,
// 128, 192 or 256); N in (kKeys - 64, kKeys] runs it, so the S registers are sized to the work.
template <class T, int D, int kKeys>
struct FwdTraits {
  static constexpr int kRows = 64;  // query rows per consumer warpgroup (wgmma's M)
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  // N <= 64: a tile is one head of one warpgroup, the two taking alternate tiles (with two 64-row
  // halves, the second would lie wholly past N and its warpgroup idle). Stages and boxes: Config.
  using Config = protocol::FwdConfig<D, kKeys>;
  static constexpr bool kHeadPerWg = Config::kHeadPerWg;
  static constexpr int kQHalves = Config::kQHalves;  // Q halves per tile
  static constexpr int kTileRows = kRows * kQHalves;

  using SmemLayoutQ = decltype(tile_to_shape(k_major_atom<T, D>(), Shape<Int<kRows>, Int<D>>{}));
  using SmemLayoutK = decltype(tile_to_shape(k_major_atom<T, D>(), Shape<Int<kKeys>, Int<D>>{}));
  // V as (d, keys) with d contiguous: the MN-major B operand of O = P V. Atoms run along the keys
  // first, so where an atom is narrower than d (d = 80: 16 wide) each strip of d is one TMA box of
  // all the keys, not one box per 8 keys (5 copies instead of 160).
  using SmemLayoutVt =
      decltype(tile_to_shape(mn_major_atom<T, D>(), Shape<Int<D>, Int<kKeys>>{}, Step<_2, _1>{}));

  // S's wgmmas (64- and 8-key chunks, s_mma below) and O's; here for their operand partitions.
  using MmaS64 = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, _64, _16>>());
  using MmaS8 = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, _8, _16>>());
  using MmaO = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, Int<D>, _16>, GMMA::Major::K,
                                                   GMMA::Major::MN>());
  using TiledMmaS64 = decltype(make_tiled_mma(MmaS64{}));
  using TiledMmaS8 = decltype(make_tiled_mma(MmaS8{}));
  using TiledMmaO = decltype(make_tiled_mma(MmaO{}));

  // q, k, out as (N, d, H, B); v as (d, N, H, B). Strides in elements, d's unit.
  using GmemLayoutRows = Layout<Shape<int, int, int, int>, Stride<int64_t, _1, int64_t, int64_t>>;
  using GmemLayoutCols = Layout<Shape<int, int, int, int>, Stride<_1, int64_t, int64_t, int64_t>>;
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, make_tensor(make_gmem_ptr(static_cast<T const*>(nullptr)),
                                                                   GmemLayoutRows{}),
                                      SmemLayoutQ{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, make_tensor(make_gmem_ptr(static_cast<T const*>(nullptr)),
                                                                   GmemLayoutRows{}),
                                      SmemLayoutK{}));
  using TmaV = decltype(make_tma_copy(SM90_TMA_LOAD{}, make_tensor(make_gmem_ptr(static_cast<T const*>(nullptr)),
                                                                   GmemLayoutCols{}),
                                      SmemLayoutVt{}));
  using TmaO = decltype(make_tma_copy(SM90_TMA_STORE{}, make_tensor(make_gmem_ptr(static_cast<T*>(nullptr)),
                                                                    GmemLayoutRows{}),
                                      SmemLayoutQ{}));

  static constexpr int kQBytes = Config::kQBox;
  static constexpr int kKVBytes = Config::kKVBox;
  static constexpr int kStages = Config::kStages;

  // The stages' barriers and who waits, arrives and fills (attention_protocol.h). A TMA box is its
  // shared-memory tile, so the boxes' bytes are the tiles' sizes.
  using Protocol = typename Config::Protocol;
  static_assert(sizeof(T) == 2, "16-bit elements");
  static_assert(int(cosize_v<SmemLayoutQ>) * 2 == kQBytes && int(cosize_v<SmemLayoutK>) * 2 == kKVBytes &&
                    int(cosize_v<SmemLayoutVt>) * 2 == kKVBytes,
                "the protocol's transaction bytes are not the TMA boxes'");

  struct Stage {
    alignas(1024) T q[kQHalves][kRows * D];  // each half also stages its rows of O for the store
    alignas(1024) T k[kKeys * D];
    alignas(1024) T v[kKeys * D];
  };
  struct Shared {
    Stage stage[kStages];
    alignas(8) typename Protocol::template Bars<uint64_t> bars;
  };
  static constexpr int kSmemBytes = int(sizeof(Shared)) + 1024;  // + the alignment of the dynamic base
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than a CTA may hold");
};

template <class T, int D, int kKeys>
struct FwdParams90 {
  using Tr = FwdTraits<T, D, kKeys>;
  typename Tr::TmaQ tma_q;
  typename Tr::TmaK tma_k;
  typename Tr::TmaV tma_v;
  typename Tr::TmaO tma_o;
  const T* bias;        // nullptr when there is none
  Strides3 bias_s;      // 0 along broadcast dims
  int64_t bias_col;
  float* lse;           // (B, H, N) or nullptr when no backward will read it
  int B, H, N;
  int m_blocks;         // ceil(N / 128)
  int tiles;            // B · H · m_blocks
  float scale_log2;     // scale · log2(e)
};

// S (64 x W) = Q Kᵀ for W = 8 · w8 in (kKeys - 64, kKeys], Q from registers (only K is read from
// shared memory, so narrow products cost no bandwidth): the first kKeys - 64 keys by n64 wgmmas, the
// last 64 by n8 ones up to W. Each accumulator register has one wgmma shape: where one register set
// served both an n64 and an n8 product, ptxas serialised every wgmma of the kernel (C7511).
template <class T, int D, int kKeys, class Desc64, class Desc8>
__device__ __forceinline__ void s_mma(float (&s)[kKeys / 2], const uint32_t (&qf)[D / 16][4], const Desc64& dk64,
                                      const Desc8& dk8, int w8) {
  using Op64 = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, _64, _16>>());
  using Op8 = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, _8, _16>>());
#pragma unroll
  for (int c = 0; c < kKeys / 64 - 1; ++c) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      float(&acc)[32] = *reinterpret_cast<float(*)[32]>(&s[32 * c]);
      wgmma_call<Op64>(qf[kk], uint64_t(dk64(_0{}, c, kk)), acc,
                       kk == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One, std::make_index_sequence<32>{});
    }
  }
#pragma unroll
  for (int j = kKeys / 8 - 8; j < kKeys / 8; ++j) {
    if (j < w8) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        float(&acc)[4] = *reinterpret_cast<float(*)[4]>(&s[4 * j]);
        wgmma_call<Op8>(qf[kk], uint64_t(dk8(_0{}, j, kk)), acc,
                        kk == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One, std::make_index_sequence<4>{});
      }
    }
  }
}

// The end of a consumer warpgroup's 64 query rows (row0 on): O / l into the rows' staging tile sO
// (their Q half; each warp writes only its own rows, which only its own ldmatrix read), the log-sum-exp
// where asked (lse: the head's row 0), and one TMA store of the 64 rows issued (it clips rows past N);
// the protocol waits for it before releasing the stage. l: this thread's share of its two rows' sums;
// m_use: their maxima in log2 units.
template <class T, int D, class Tma, class MO, class SO>
__device__ __forceinline__ void store_o_rows(const float (&o)[D / 2], float (&l)[2], const float (&m_use)[2],
                                             const SO& sO, const Tma& tma_o, const MO& mO, float* lse, int row0,
                                             int N, int h, int b, int cw) {
  const int lane_wg = threadIdx.x % 128, warp = lane_wg / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = 1.f / l[r];
  }
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + g + 8 * r, col = j * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(&sO(row, col)) =
          pack2(o[j * 4 + 2 * r] * inv[r], o[j * 4 + 2 * r + 1] * inv[r], static_cast<T*>(nullptr));
    }
  }
  if (lse != nullptr && t == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + warp * 16 + g + 8 * r;
      // lse in natural-log units of the scaled, biased logits: (m + log2 l) / log2(e).
      if (row < N) lse[row] = (m_use[r] + __log2f(l[r])) * 0.6931471805599453f;
    }
  }
  tma_store_fence();  // the generic-proxy writes above, seen by the TMA unit
  cutlass::arch::NamedBarrier::sync(128, 1 + cw);
  if (lane_wg == 0) {
    Tensor gO = local_tile(mO(_, _, h, b), Shape<_64, Int<D>>{}, make_coord(row0 / 64, 0));
    auto [tg, ts] = tma_partition(tma_o, _0{}, Layout<_1>{}, group_modes<0, 2>(sO), group_modes<0, 2>(gO));
    copy(tma_o, ts, tg);
    tma_store_arrive();
  }
  __syncwarp();
}

template <class T, int D, int kKeys>
__global__ void __launch_bounds__(FwdTraits<T, D, kKeys>::kThreads, 1)
    attention_fwd_sm90_kernel(const __grid_constant__ FwdParams90<T, D, kKeys> p) {
  using Tr = FwdTraits<T, D, kKeys>;
  using Protocol = typename Tr::Protocol;
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
  const typename Protocol::template ShapeOf<const int&> shape{p.N, p.m_blocks};
  if (wg == 0) {  // ---- producer
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (lane_wg != 0) return;
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    Tensor mQ = p.tma_q.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mK = p.tma_k.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mVt = p.tma_v.get_tma_tensor(make_shape(D, N, p.H, p.B));
    // The tile's head (h, b) and its 128-row block.
    auto head = [&](int tile, int& h, int& b) {
      const int bh = tile / p.m_blocks;
      b = bh / p.H;
      h = bh % p.H;
      return tile % p.m_blocks;
    };
    ProducerSync<Protocol> sync{{-1, &sh.bars}};
    Protocol::producer(sync, sh.bars, walk, shape,
                       protocol::LoadQKV{
                           [&](uint64_t& bar, int tile, int st, int half) {
                             int h, b;
                             const int mb = head(tile, h, b);
                             tma_load_tile(p.tma_q, mQ, Shape<Int<Tr::kRows>, Int<D>>{}, mb * Tr::kQHalves + half, h,
                                           b, sh.stage[st].q[half], typename Tr::SmemLayoutQ{}, bar);
                           },
                           [&](uint64_t& bar, int tile, int st) {
                             int h, b;
                             head(tile, h, b);
                             tma_load_tile(p.tma_k, mK, Shape<Int<kKeys>, Int<D>>{}, 0, h, b, sh.stage[st].k,
                                           typename Tr::SmemLayoutK{}, bar);
                           },
                           [&](uint64_t& bar, int tile, int st) {
                             int h, b;
                             head(tile, h, b);
                             tma_load_tile(p.tma_v, mVt, Shape<Int<D>, Int<kKeys>>{}, 0, h, b, sh.stage[st].v,
                                           typename Tr::SmemLayoutVt{}, bar);
                           }});
    return;
  }

  // ---- consumers
  cutlass::arch::warpgroup_reg_alloc<240>();
  const int cw = wg - 1;                      // which 64-row half of the tile (or which tiles, kHeadPerWg)
  const int warp = lane_wg / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;       // accumulator element (g, 2t): rows g and g + 8
  const int w8 = (N + 7) / 8;                 // S's width in 8s
  const int k16 = (N + 15) / 16;              // O = P V's key steps
  typename Tr::TiledMmaS64 mma_s64;
  typename Tr::TiledMmaS8 mma_s8;
  typename Tr::TiledMmaO mma_o;
  auto thr_s64 = mma_s64.get_thread_slice(lane_wg);
  auto thr_s8 = mma_s8.get_thread_slice(lane_wg);
  auto thr_o = mma_o.get_thread_slice(lane_wg);
  Tensor mO = p.tma_o.get_tma_tensor(make_shape(N, D, p.H, p.B));

  // S, then P: element (g + 8 (e / 2), 8 j + 2 t + e % 2) at s[4 j + e]; O the same way. Both are
  // zeroed before their first wgmma (which ignores them): the asm reads its accumulators, and without
  // this the previous tile's values would be live through the whole tile. This thread's share of its
  // rows' sums (l) and their maxima in log2 units (m_use).
  float s[kKeys / 2];
  float o[D / 2];
  uint32_t pf[kKeys / 16][4];  // P packed as O = P V's A operand
  float m_use[2], l[2];

  // S = Q Kᵀ and the softmax of the warpgroup's 64 rows (row0 on) of the tile in stage st.
  auto scores = [&](int tile, int st, int half, int row0) {
    auto& stage = sh.stage[st];
    Tensor sQ = make_tensor(make_smem_ptr(stage.q[half]), typename Tr::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(stage.k), typename Tr::SmemLayoutK{});
    Tensor dk64 = thr_s64.partition_fragment_B(sK);  // descriptors, (1, kKeys / 64, D / 16)
    Tensor dk8 = thr_s8.partition_fragment_B(sK);    // (1, kKeys / 8, D / 16)

    // This warp's 16 rows of Q as wgmma A fragments (the mma.sync m16n8k16 A layout), by ldmatrix.
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      mma::ldmatrix_x4(qf[kk], mma::smem_addr(&sQ(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8)));
    }
    zero_fenced(s);
    warpgroup_arrive();
    s_mma<T, D, kKeys>(s, qf, dk64, dk8, w8);
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    fence(s);

    // Logits in log2 units: y = s · scale · log2(e) + bias · log2(e). Only the n8 tail's blocks can
    // hold columns past N (-inf there), and its blocks past W are skipped: still 0 from the zeroing,
    // they are P's zeros.
    constexpr int kTail = kKeys / 8 - 8;
    const int row_a = row0 + warp * 16 + g;  // this thread's rows: row_a and row_a + 8
    float mx[2] = {-INFINITY, -INFINITY};
    auto logits = [&](auto with_bias) {
      const T* bias_row[2] = {nullptr, nullptr};
      if constexpr (decltype(with_bias)::value) {
        const int bh = tile / p.m_blocks;
        const T* base = p.bias + (bh / p.H) * p.bias_s.b + (bh % p.H) * p.bias_s.h;
        bias_row[0] = base + int64_t(min(row_a, N - 1)) * p.bias_s.n;  // rows past N: clipped by the store
        bias_row[1] = base + int64_t(min(row_a + 8, N - 1)) * p.bias_s.n;
      }
      // This thread's column 8 j + (e & 1) is key 2 t + 8 j + (e & 1): the mask a compare with a
      // constant, the bias read through four pointers (two rows, two parities) stepped 8 columns at
      // a time, not a 64-bit product per element.
      const int lim = N - 2 * t;
      [[maybe_unused]] const T* bp[2][2];
      if constexpr (decltype(with_bias)::value) {
#pragma unroll
        for (int e = 0; e < 4; ++e) bp[e >> 1][e & 1] = bias_row[e >> 1] + int64_t(2 * t + (e & 1)) * p.bias_col;
      }
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) {
        if (j >= kTail && j >= w8) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool in = j < kTail || j * 8 + (e & 1) < lim;
          float y = s[j * 4 + e] * p.scale_log2;
          if constexpr (decltype(with_bias)::value) {
            if (in) y = fmaf(float(bp[e >> 1][e & 1][int64_t(j * 8) * p.bias_col]), 1.4426950408889634f, y);
          }
          if (j >= kTail) y = in ? y : -INFINITY;
          s[j * 4 + e] = y;
          mx[e >> 1] = fmaxf(mx[e >> 1], y);
        }
      }
    };
    if (p.bias != nullptr) {
      logits(std::true_type{});
    } else {
      logits(std::false_type{});
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      m_use[r] = mx[r] == -INFINITY ? 0.f : mx[r];  // a row of -inf logits: p = 0, out = 0/0 as eager's
      l[r] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j) {
      if (j >= kTail && j >= w8) continue;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = mma::ex2_ftz(s[j * 4 + e] - m_use[e >> 1]);
        s[j * 4 + e] = pe;
        l[e >> 1] += pe;
      }
    }
    // The S accumulators of two adjacent 8-key blocks are one k16 A fragment of O = P V. All of P is
    // packed before the first wgmma, so no register a wgmma in flight reads is written under it.
    pack_a_frags<T>(s, pf);
  };

  // O = P V over the ceil(N / 16) key steps of stage st's V.
  auto values = [&](int st) {
    Tensor sV = make_tensor(make_smem_ptr(sh.stage[st].v), typename Tr::SmemLayoutVt{});
    Tensor dv = thr_o.partition_fragment_B(sV);  // (1, 1, kKeys / 16)
    zero_fenced(o);
    warpgroup_arrive();
#pragma unroll
    for (int kb = 0; kb < kKeys / 16; ++kb) {
      if (kb < k16) {
        wgmma_call<typename Tr::MmaO>(pf[kb], uint64_t(dv(_0{}, _0{}, kb)), o,
                                      kb == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One,
                                      std::make_index_sequence<D / 2>{});
      }
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    fence(o);
  };

  auto store = [&](int tile, int st, int half, int row0) {
    const int bh = tile / p.m_blocks;
    Tensor sQ = make_tensor(make_smem_ptr(sh.stage[st].q[half]), typename Tr::SmemLayoutQ{});
    store_o_rows<T, D>(o, l, m_use, sQ, p.tma_o, mO, p.lse == nullptr ? nullptr : p.lse + int64_t(bh) * N, row0, N,
                       bh % p.H, bh / p.H, cw);
  };

  ConsumerSync<Protocol> sync{{cw, &sh.bars}};
  Protocol::consumer(sync, sh.bars, walk, shape, cw,
                     protocol::FwdBody{scores, values, store});
}

}  // namespace vitfast::attention::sm90
