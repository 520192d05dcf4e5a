#pragma once
// Hopper backward attention. For ViT lengths (N <= 256; d <= 64, or N <= 128) one CTA finishes a
// head: its K and V stay in shared memory while the queries stream through in chunks of 64 rows (q,
// dO and O by TMA), so dQ is completed inside the CTA: no fp32 dQ accumulator in global memory, no
// atomics, no extra pass. Longer heads are split into groups of kKeys keys, one CTA each (work =
// head x group); each adds its share of dQ into an fp32 accumulator by TMA reduce-add
// (attention_path.h: sm90_bwd_key_groups). The dO·O row sums are taken in the CTA too. sm_90a only
// (wgmma, TMA, setmaxnreg).
//
// A persistent CTA of three warpgroups walks the (head, key group) pairs:
//   warpgroup 0, one thread: the producer. TMA loads of the group's K and V (one barrier), then of
//     every chunk's q, dO and O into two stages.
//   warpgroups 1 and 2 (the consumers) each own the 64-key blocks w, w + 2 of the head: per chunk
//     and block, Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (keys as wgmma rows), Pᵀ = exp(Sᵀ · scale + biasᵀ - lse)
//     and dSᵀ = Pᵀ ∘ (dPᵀ - delta) in registers, dV += Pᵀ dO and dK += dSᵀ Q by register-operand
//     wgmma, dSᵀ into shared memory. After both have written the chunk's dS, one of them (by the
//     chunk's parity) takes dQ = dS K · scale over the group's keys and writes it by TMA store (one
//     group) or adds it into the fp32 accumulator by TMA reduce-add (several).
//   For N <= 64 (one key block, one chunk) each consumer takes every other head whole, dQ included.
// The bias gradient, when asked, is dS itself: stored per (b, h) into a (B, H, N, N) buffer for a bias
// of that shape (and in fp32 for (B, 1, N, N), the host summing it over the heads); a bias broadcast
// over the batch gets 16-byte reductions of dS into a few batch slots of fp32 partial sums, issued by
// the consumer that does not take the chunk's dQ, or by the head's own (the host sums the slots).
#include "attention/attention_params.h"
#include "attention/attention_path.h"
#include "attention/sm90/attention_protocol.h"
#include "attention/sm90/sm90_sync.cuh"
#include "attention/sm90/sm90_util.cuh"
#include "cute/arch/cluster_sm90.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"

namespace vitfast::attention::sm90 {

using namespace cute;

template <class T, int D, int kKeys>
struct BwdTraits {
  static constexpr int kRows = 64;  // queries per chunk, keys per block: wgmma's M
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kBlocks = kKeys / kRows;                                  // key blocks in the tile
  static constexpr int kBlocksPerWg = (kBlocks + kConsumers - 1) / kConsumers;  // consumer w: w, w + 2
  // N <= 64 (one key block, one chunk): a head per consumer, the two taking alternate heads, each
  // doing its dQ too (with the key blocks split, the second would own none and idle). Not at d = 128,
  // where ptxas spilled it (60-116 bytes; the split form does not spill).
  using Config = protocol::BwdConfig<D, kKeys>;
  static constexpr bool kHeadPerWg = Config::kHeadPerWg;
  static constexpr int kArrivals = kHeadPerWg ? 1 : kConsumers;  // consumers that release a stage
  static_assert(sm90_bwd_fits(D, kKeys), "dK and dV for this head do not fit in registers");
  // Queries per Sᵀ / dPᵀ product: 32 where dK and dV take more than 64 registers, so the transient
  // Sᵀ, dPᵀ and packed Pᵀ shrink from 80 to 40 (ptxas spilled at 64 above that).
  static constexpr int kSub = kBlocksPerWg * D > 64 ? 32 : 64;
  // dQ's columns per product: at d = 128 two halves (one 128-byte swizzle atom of Kᵀ each), so dQ's
  // accumulators beside dK and dV take 32 registers, not 64 (ptxas spilled with 64).
  static constexpr int kDqCols = D >= 128 ? 64 : D;

  // q, dO, O chunks and the head's K, V: rows of d, K-major. Their transposes (d, rows) are the
  // MN-major B operands of dK += dSᵀ Q, dV += Pᵀ dO and dQ = dS K: the same bytes, another view.
  using SmemLayoutRows = decltype(tile_to_shape(k_major_atom<T, D>(), Shape<Int<kRows>, Int<D>>{}));
  using SmemLayoutKeys = decltype(tile_to_shape(k_major_atom<T, D>(), Shape<Int<kKeys>, Int<D>>{}));
  using SmemLayoutRowsT =
      decltype(composition(SmemLayoutRows{}, make_layout(Shape<Int<D>, Int<kRows>>{}, GenRowMajor{})));
  using SmemLayoutKeysT =
      decltype(composition(SmemLayoutKeys{}, make_layout(Shape<Int<D>, Int<kKeys>>{}, GenRowMajor{})));
  // dS of a chunk as (queries, keys), queries contiguous: the MN-major A operand of dQ = dS K, which
  // the consumers write as packed query pairs from their dSᵀ accumulators.
  using SmemLayoutDS = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<T>{}, Shape<Int<kRows>, Int<kKeys>>{}));
  // A chunk's share of dQ in fp32 for the reduce-add of a split head, staged over the chunk's q and dO
  // buffers (adjacent, 2 · 64 · d · 2 bytes): rows of d floats in the widest swizzle that divides them.
  using SmemLayoutDqAcc = decltype(tile_to_shape(k_major_atom<float, D>(), Shape<Int<kRows>, Int<D>>{}));

  using MmaSS = decltype(SM90::GMMA::ss_op_selector<T, T, float, Shape<_64, Int<kSub>, _16>>());  // Sᵀ, dPᵀ
  using MmaKV = decltype(SM90::GMMA::rs_op_selector<T, T, float, Shape<_64, Int<D>, _16>, GMMA::Major::K,
                                                    GMMA::Major::MN>());  // dV, dK
  using MmaQ = decltype(SM90::GMMA::ss_op_selector<T, T, float, Shape<_64, Int<kDqCols>, _16>, GMMA::Major::MN,
                                                   GMMA::Major::MN>());  // dQ
  using TiledMmaSS = decltype(make_tiled_mma(MmaSS{}));
  using TiledMmaKV = decltype(make_tiled_mma(MmaKV{}));
  using TiledMmaQ = decltype(make_tiled_mma(MmaQ{}));

  // q, k, v, dO, O, dQ as (N, d, H, B), d unit-stride; strides in elements.
  using GmemLayout = Layout<Shape<int, int, int, int>, Stride<int64_t, _1, int64_t, int64_t>>;
  using GmemIn = decltype(make_tensor(make_gmem_ptr(static_cast<T const*>(nullptr)), GmemLayout{}));
  using TmaRows = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemIn{}, SmemLayoutRows{}));
  using TmaKeys = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemIn{}, SmemLayoutKeys{}));
  using TmaStore = decltype(make_tma_copy(SM90_TMA_STORE{}, make_tensor(make_gmem_ptr(static_cast<T*>(nullptr)),
                                                                        GmemLayout{}),
                                          SmemLayoutRows{}));
  using TmaReduceAdd =
      decltype(make_tma_copy(SM90_TMA_REDUCE_ADD{},
                             make_tensor(make_gmem_ptr(static_cast<float*>(nullptr)), GmemLayout{}), SmemLayoutDqAcc{}));

  static constexpr int kRowsBytes = kRows * D * 2;
  static constexpr int kKeysBytes = kKeys * D * 2;
  struct KV {
    alignas(1024) T k[kKeys * D];
    alignas(1024) T v[kKeys * D];
  };
  struct Chunk {
    alignas(1024) T q[kRows * D];  // also stages the chunk's dQ for its store (with dout, in fp32)
    alignas(1024) T dout[kRows * D];
    alignas(1024) T o[kRows * D];
  };
  static_assert(offsetof(Chunk, dout) == kRows * D * 2, "dQ's fp32 staging needs q and dout adjacent");
  // The next head's K and V stream in while this one computes where a second copy fits (Config's
  // count, from these sizes).
  static_assert(int(sizeof(Chunk)) == 3 * Config::kRowsBox && int(sizeof(KV)) == 2 * Config::kKeysBox,
                "the configuration's sizes are not the buffers'");
  static constexpr int kKvStages = Config::kKvStages;
  // With a head per consumer, consumer w's heads (and, one chunk each, their chunks) use stage w
  // alone, so each stage's phases follow one consumer's heads in order.
  static_assert(!kHeadPerWg || kKvStages == 2, "a head per consumer needs a K/V stage each");
  // The stages' barriers and who waits, arrives and fills (attention_protocol.h).
  using Protocol = typename Config::Protocol;
  static_assert(Config::kRowsBox == kRowsBytes && Config::kKeysBox == kKeysBytes, "boxes differ");
  static_assert(Protocol::kArrivals == kArrivals, "arrivals differ");
  static_assert(int(cosize_v<SmemLayoutRows>) * 2 == kRowsBytes && int(cosize_v<SmemLayoutKeys>) * 2 == kKeysBytes,
                "the protocol's transaction bytes are not the TMA boxes'");
  struct Shared {
    KV kv[kKvStages];
    Chunk chunk[2];
    alignas(1024) T ds[2][kRows * kKeys];  // by chunk parity: one is written while the other feeds dQ
    float lse[kConsumers][kRows];          // per consumer: the chunk's lse in log2 units, +inf past N
    float delta[kConsumers][kRows];        // per consumer: the chunk's rowsum(dO ∘ O)
    alignas(8) typename Protocol::template Bars<uint64_t> bars;
  };
  static constexpr int kSmemBytes = int(sizeof(Shared)) + 1024;  // + the alignment of the dynamic base
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than a CTA may hold");
};

__device__ __forceinline__ void st_shared(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

// *at += (a, b, c, d): one 16-byte reduction (sm_90's vector red), no return value.
__device__ __forceinline__ void red_add_v4(float* at, float a, float b, float c, float d) {
  asm volatile("red.relaxed.gpu.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(at), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
}

// sdS holds (q, key) at byte key · 128 + (2 q ^ (key % 8) · 16): the 128-byte MN-major swizzle, whose
// XOR touches bits 4-6 only. The kernel writes it through that formula (32-bit shared addresses, one
// XOR and an immediate per store; CuTe's 64-bit generic addresses were hoisted and spilled). This
// checks the formula at compile time against what a CuTe smem tensor of the layout addresses (its
// swizzle applied to the byte offset of its inner layout) for every query and the first and last 16
// keys (the atoms repeat every 8 keys; all keys exceed the compiler's constexpr budget).
template <class Layout, int kKeys>
constexpr bool ds_bytes_match() {
  using Inner = decltype(Layout{}.layout_b());
  using Swz = decltype(Layout{}.layout_a());
  for (int key = 0; key < kKeys; key += key == 15 ? kKeys - 31 : 1) {
    for (int q = 0; q < 64; ++q) {
      if (int(Swz{}(2 * int(Inner{}(q, key)))) != key * 128 + ((2 * q) ^ ((key % 8) << 4))) return false;
    }
  }
  return true;
}

template <class T, int D, int kKeys>
struct BwdParams90 {
  using Tr = BwdTraits<T, D, kKeys>;
  typename Tr::TmaRows tma_q, tma_do, tma_o;
  typename Tr::TmaKeys tma_k, tma_v;
  typename Tr::TmaStore tma_dq;             // one key group: dQ in q's dtype
  typename Tr::TmaReduceAdd tma_dq_accum;   // several: added into the fp32 accumulator
  const T* bias;    // nullptr when there is none
  Strides3 bias_s;  // 0 along broadcast dims
  int64_t bias_col;
  const float* lse;  // (B, H, N)
  T* dk;             // (B, H, N, d) contiguous
  T* dv;
  void* dbias;       // (B, H, N, N) contiguous, T or float (dbias_f32), or nullptr
  bool dbias_f32;
  float* dbias_part;  // a bias broadcast over the batch: (slots, H, N keys, ld queries) fp32, or nullptr
  int dbias_slots;    // batch b adds into slot b % slots
  int dbias_ld;
  int B, H, N;
  int chunks;        // ceil(N / 64)
  int key_groups;    // ceil(N / kKeys): 1 where a CTA finishes the head
  int works;         // B · H · key_groups
  float scale;
  float scale_log2;  // scale · log2(e)
};

template <class T, int D, int kKeys>
__global__ void __launch_bounds__(BwdTraits<T, D, kKeys>::kThreads, 1)
    attention_bwd_sm90_kernel(const __grid_constant__ BwdParams90<T, D, kKeys> p) {
  using Tr = BwdTraits<T, D, kKeys>;
  constexpr int kRows = Tr::kRows;
  constexpr int kSub = Tr::kSub;
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ char smem_raw[];
  auto& sh = aligned_shared<typename Tr::Shared>(smem_raw);

  const int wg = threadIdx.x / 128;
  const int lane_wg = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    ProducerSync<typename Tr::Protocol> sync{{-1, &sh.bars}};
    Tr::Protocol::init(sync, sh.bars);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int N = p.N;
  const GridWalk walk{p.works};
  const typename Tr::Protocol::template ShapeOf<const int&> shape{p.chunks, p.key_groups};
  if (wg == 0) {  // ---- producer
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (lane_wg != 0) return;
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_do.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_o.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    Tensor mQ = p.tma_q.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mdO = p.tma_do.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mO = p.tma_o.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mK = p.tma_k.get_tma_tensor(make_shape(N, D, p.H, p.B));
    Tensor mV = p.tma_v.get_tma_tensor(make_shape(N, D, p.H, p.B));
    const auto rows = Shape<Int<kRows>, Int<D>>{};
    const auto keys = Shape<Int<kKeys>, Int<D>>{};
    ProducerSync<typename Tr::Protocol> sync{{-1, &sh.bars}};
    Tr::Protocol::producer(
        sync, sh.bars, walk, shape,
        protocol::BwdLoad{
            [&](uint64_t& bar, int work, int kvs) {
              const int bh = work / p.key_groups;
              tma_load_tile(p.tma_k, mK, keys, work % p.key_groups, bh % p.H, bh / p.H, sh.kv[kvs].k,
                            typename Tr::SmemLayoutKeys{}, bar);
            },
            [&](uint64_t& bar, int work, int kvs) {
              const int bh = work / p.key_groups;
              tma_load_tile(p.tma_v, mV, keys, work % p.key_groups, bh % p.H, bh / p.H, sh.kv[kvs].v,
                            typename Tr::SmemLayoutKeys{}, bar);
            },
            [&](uint64_t& bar, int kind, int work, int c, int st) {
              const int bh = work / p.key_groups, b = bh / p.H, h = bh % p.H;
              auto& ch = sh.chunk[st];
              if (kind == protocol::kQ) {
                tma_load_tile(p.tma_q, mQ, rows, c, h, b, ch.q, typename Tr::SmemLayoutRows{}, bar);
              } else if (kind == protocol::kDout) {
                tma_load_tile(p.tma_do, mdO, rows, c, h, b, ch.dout, typename Tr::SmemLayoutRows{}, bar);
              } else {
                tma_load_tile(p.tma_o, mO, rows, c, h, b, ch.o, typename Tr::SmemLayoutRows{}, bar);
              }
            }});
    return;
  }

  // ---- consumers
  cutlass::arch::warpgroup_reg_alloc<240>();
  const int cw = wg - 1;  // owns key blocks cw, cw + 2 (kHeadPerWg: every other head)
  const int warp = lane_wg / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // accumulator element (g, 2t): rows g and g + 8
  typename Tr::TiledMmaSS mma_ss;
  typename Tr::TiledMmaKV mma_kv;
  typename Tr::TiledMmaQ mma_q;
  auto thr_ss = mma_ss.get_thread_slice(lane_wg);
  auto thr_kv = mma_kv.get_thread_slice(lane_wg);
  auto thr_q = mma_q.get_thread_slice(lane_wg);
  Tensor mdQ = p.tma_dq.get_tma_tensor(make_shape(N, D, p.H, p.B));
  Tensor mdQacc = p.tma_dq_accum.get_tma_tensor(make_shape(N, D, p.H, p.B));
  float* lse_s = sh.lse[cw];
  float* delta_s = sh.delta[cw];

  // Accumulators: element (g + 8 (e / 2), 8 j + 2 t + e % 2) at x[4 j + e]. Sᵀ, dPᵀ: (keys, kSub
  // queries); dK, dV: (keys, d); dQ: (queries, d).
  float dk[Tr::kBlocksPerWg][D / 2], dv[Tr::kBlocksPerWg][D / 2];
  float s[kSub / 2], dp[kSub / 2], dq[Tr::kDqCols / 2];
  // The work item's head and key group, set by begin: the group's first key, how many of its keys
  // lie before N, its K/V stage, the head's bias (nullptr without one).
  int bh = 0, b = 0, h = 0, key0 = 0, keys = 0, k32 = 0, kvs = 0;
  const T* bias = nullptr;

  auto begin = [&](int work, int kv_stage) {
    bh = work / p.key_groups;
    b = bh / p.H;
    h = bh % p.H;
    key0 = (work % p.key_groups) * kKeys;
    keys = min(kKeys, N - key0);
    // dQ's key steps, 32 keys each, as one straight batch per count (wgmma_batch): with a branch per
    // k16 step inside the batch ptxas injected a warpgroup.arrive before each, and where a consumer
    // takes a head whole, serialised the wgmmas (C7520). Past N, within the key blocks written, dS is
    // 0 and K's rows are TMA's zeros.
    k32 = (keys + 31) / 32;
    kvs = kv_stage;
#pragma unroll
    for (int i = 0; i < Tr::kBlocksPerWg; ++i) {
      zero_fenced(dk[i]);
      zero_fenced(dv[i]);
    }
    bias = p.bias != nullptr ? p.bias + b * p.bias_s.b + h * p.bias_s.h : nullptr;
  };

  // The chunk's lse in log2 units, +inf past N (P = 0 there), before its q, dO and O land.
  auto chunk_start = [&](int c, int st) {
    if (lane_wg < kRows) {
      const int q = c * kRows + lane_wg;
      lse_s[lane_wg] = q < N ? p.lse[int64_t(bh) * N + q] * kLog2e : INFINITY;
    }
  };

  // delta, then per key block Sᵀ, dPᵀ, Pᵀ, dV += Pᵀ dO, dSᵀ, dK += dSᵀ Q, and dS into sh.ds[st].
  auto products = [&](int c, int st) {
    const int q0 = c * kRows;
    auto& ch = sh.chunk[st];
    auto& kv = sh.kv[kvs];
    Tensor sK = make_tensor(make_smem_ptr(kv.k), typename Tr::SmemLayoutKeys{});
    Tensor sV = make_tensor(make_smem_ptr(kv.v), typename Tr::SmemLayoutKeys{});
    Tensor sQ = make_tensor(make_smem_ptr(ch.q), typename Tr::SmemLayoutRows{});
    Tensor sdO = make_tensor(make_smem_ptr(ch.dout), typename Tr::SmemLayoutRows{});
    Tensor sO = make_tensor(make_smem_ptr(ch.o), typename Tr::SmemLayoutRows{});
    {  // delta = rowsum(dO ∘ O): two threads per row, 16-byte reads (the swizzle moves 16-byte units)
      const int row = lane_wg / 2, half = lane_wg % 2;
      float acc = 0.f;
#pragma unroll
      for (int c8 = half; c8 < D / 8; c8 += 2) {
        const uint4 a = *reinterpret_cast<const uint4*>(&sdO(row, c8 * 8));
        const uint4 o = *reinterpret_cast<const uint4*>(&sO(row, c8 * 8));
        const T* ae = reinterpret_cast<const T*>(&a);
        const T* oe = reinterpret_cast<const T*>(&o);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc = fmaf(float(ae[i]), float(oe[i]), acc);
      }
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      if (half == 0) delta_s[row] = acc;
    }
    cutlass::arch::NamedBarrier::sync(128, 1 + cw);  // lse_s, delta_s written

    Tensor sQt = make_tensor(make_smem_ptr(ch.q), typename Tr::SmemLayoutRowsT{});
    Tensor sdOt = make_tensor(make_smem_ptr(ch.dout), typename Tr::SmemLayoutRowsT{});
    Tensor sdS = make_tensor(make_smem_ptr(sh.ds[st]), typename Tr::SmemLayoutDS{});
    static_assert(ds_bytes_match<typename Tr::SmemLayoutDS, kKeys>(), "sdS's layout is not the formula");
    // This thread's dS bytes: key rows warp·16 + g (+ 8, + 64 j), so key % 8 = g; the query's
    // 16-byte column is XORed in per store, the key's row added as an immediate.
    const uint32_t ds_thread =
        uint32_t(__cvta_generic_to_shared(sh.ds[st])) + (warp * 16 + g) * 128 + (g << 4) + 4 * t;
    Tensor b_qt = thr_kv.partition_fragment_B(sQt);   // (1, 1, 4)
    Tensor b_dot = thr_kv.partition_fragment_B(sdOt); // (1, 1, 4)

#pragma unroll
    for (int i = 0; i < Tr::kBlocksPerWg; ++i) {
      const int j = Tr::kHeadPerWg ? i : cw + Tr::kConsumers * i;  // key block
      if (j >= Tr::kBlocks || j * kRows >= keys) continue;
#pragma unroll
      for (int sub = 0; sub < kRows / kSub; ++sub) {
        const int qs = sub * kSub;  // this product's first query in the chunk
        Tensor b_q = thr_ss.partition_fragment_B(local_tile(sQ, Shape<Int<kSub>, Int<D>>{}, make_coord(sub, 0)));
        Tensor b_do = thr_ss.partition_fragment_B(local_tile(sdO, Shape<Int<kSub>, Int<D>>{}, make_coord(sub, 0)));
        Tensor a_k = thr_ss.partition_fragment_A(local_tile(sK, Shape<Int<kRows>, Int<D>>{}, make_coord(j, 0)));
        Tensor a_v = thr_ss.partition_fragment_A(local_tile(sV, Shape<Int<kRows>, Int<D>>{}, make_coord(j, 0)));
        // Sᵀ = K_j Qᵀ and dPᵀ = V_j dOᵀ in one batch.
        zero_fenced(s);
        zero_fenced(dp);
        warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const auto so = kk == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
          wgmma_call<typename Tr::MmaSS>(uint64_t(a_k(_0{}, _0{}, kk)), uint64_t(b_q(_0{}, _0{}, kk)), s, so,
                                         std::make_index_sequence<kSub / 2>{});
          wgmma_call<typename Tr::MmaSS>(uint64_t(a_v(_0{}, _0{}, kk)), uint64_t(b_do(_0{}, _0{}, kk)), dp, so,
                                         std::make_index_sequence<kSub / 2>{});
        }
        warpgroup_commit_batch();
        warpgroup_wait<0>();
        fence(s);
        fence(dp);

        // Pᵀ = exp2(Sᵀ · scale · log2 e + biasᵀ · log2 e - lse · log2 e): 0 for keys past N (their
        // rows of K are TMA's zeros, finite) and for queries past N (lse = +inf there).
        const int key_a = key0 + j * kRows + warp * 16 + g;  // this thread's keys: key_a and key_a + 8
        const bool key_in[2] = {key_a < N, key_a + 8 < N};
        auto probs = [&](auto with_bias) {
#pragma unroll
          for (int jj = 0; jj < kSub / 8; ++jj) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int qi = qs + jj * 8 + 2 * t + (e & 1);
              float x = s[jj * 4 + e] * p.scale_log2 - lse_s[qi];
              if constexpr (decltype(with_bias)::value) {
                const int q = min(q0 + qi, N - 1), key = min(key_a + 8 * (e >> 1), N - 1);
                x = fmaf(float(bias[int64_t(q) * p.bias_s.n + int64_t(key) * p.bias_col]), kLog2e, x);
              }
              s[jj * 4 + e] = key_in[e >> 1] ? mma::ex2_ftz(x) : 0.f;
            }
          }
        };
        if (bias != nullptr) {
          probs(std::true_type{});
        } else {
          probs(std::false_type{});
        }
        // dV_j += Pᵀ dO: Pᵀ packed as the A operand (two 8-query blocks make one k16 step).
        uint32_t pf[kSub / 16][4];
        pack_a_frags<T>(s, pf);
        // acc += frags · B over this product's queries (dV += Pᵀ dO, dK += dSᵀ Q), one batch.
        auto kv_product = [&](const auto& frags, const auto& b_desc, auto& acc) {
          warpgroup_arrive();
#pragma unroll
          for (int kb = 0; kb < kSub / 16; ++kb) {
            wgmma_call<typename Tr::MmaKV>(frags[kb], uint64_t(b_desc(_0{}, _0{}, qs / 16 + kb)), acc,
                                           GMMA::ScaleOut::One, std::make_index_sequence<D / 2>{});
          }
          warpgroup_commit_batch();
        };
        kv_product(pf, b_dot, dv[i]);

        // dSᵀ = Pᵀ ∘ (dPᵀ - delta), the bias gradient's elements.
#pragma unroll
        for (int jj = 0; jj < kSub / 8; ++jj) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            dp[jj * 4 + e] = s[jj * 4 + e] * (dp[jj * 4 + e] - delta_s[qs + jj * 8 + 2 * t + (e & 1)]);
          }
        }
        if (p.dbias != nullptr) {
#pragma unroll
          for (int jj = 0; jj < kSub / 8; ++jj) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int q = q0 + qs + jj * 8 + 2 * t + (e & 1), key = key_a + 8 * (e >> 1);
              if (q < N && key < N) {
                const int64_t at = (int64_t(bh) * N + q) * N + key;
                if (p.dbias_f32) {
                  static_cast<float*>(p.dbias)[at] = dp[jj * 4 + e];
                } else {
                  static_cast<T*>(p.dbias)[at] = T(dp[jj * 4 + e]);
                }
              }
            }
          }
        }
        // dK_j += dSᵀ Q (scaled at the end), and dSᵀ's query pairs into the chunk's dS for dQ.
        uint32_t dsf[kSub / 16][4];
        pack_a_frags<T>(dp, dsf);
        kv_product(dsf, b_qt, dk[i]);
#pragma unroll
        for (int kb = 0; kb < kSub / 16; ++kb) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            // dsf[kb][r]: key row g + 8 (r % 2), queries qs + 16 kb + 8 (r / 2) + 2 t and the next one,
            // in the query's 16-byte column col16.
            const int col16 = (qs + kb * 16 + 8 * (r >> 1)) / 8;
            st_shared((ds_thread ^ (col16 << 4)) + (j * kRows + 8 * (r & 1)) * 128, dsf[kb][r]);
          }
        }
        warpgroup_wait<0>();  // pf and dsf are read by the wgmmas until here
        fence(dv[i]);
        fence(dk[i]);
      }
    }

    // The chunk's dS written and q, dO, O read by this consumer's wgmmas; seen by wgmma's async proxy
    // (the other consumer's dQ) after the protocol's barrier.
    cutlass::arch::fence_view_async_shared();
  };

  // The chunk's dSᵀ (the group's key rows, 64 queries each) added into the batch slot's partial
  // sums of a bias broadcast over the batch: eight threads per key row, a 16-byte read of the
  // swizzled tile and two 16-byte reductions each. Done by the consumer that does not take the
  // chunk's dQ, while the other does; the tile is rewritten two chunks on, after the next chunk's
  // barrier, which this thread reaches only when done here. With a head per consumer, before its
  // own dQ (whose staging barrier orders these reads before the next head's dS).
  auto bias_partials = [&](int c, int st) {
    const int q0 = c * kRows;
    const int qa = q0 + 8 * (lane_wg % 8);  // this thread's 8 queries
    if (p.dbias_part == nullptr || qa >= N) return;
    const int r0 = lane_wg / 8;  // key rows r0, r0 + 16, ...: the same swizzle row (r0 % 8)
    const uint32_t col =
        uint32_t(__cvta_generic_to_shared(sh.ds[st])) + (((lane_wg % 8) ^ (r0 % 8)) << 4);
    float* row = p.dbias_part + ((int64_t(b % p.dbias_slots) * p.H + h) * N + key0 + r0) * p.dbias_ld + qa;
    const bool hi = qa + 4 < N;  // the ld (N rounded to 4) holds the first four in any case
#pragma unroll 4
    for (int r = r0; r < keys; r += 16, row += 16 * int64_t(p.dbias_ld)) {
      const uint4 v = ld_shared_v4(col + r * 128);
      const T* e = reinterpret_cast<const T*>(&v);
      red_add_v4(row, float(e[0]), float(e[1]), float(e[2]), float(e[3]));
      if (hi) red_add_v4(row + 4, float(e[4]), float(e[5]), float(e[6]), float(e[7]));
    }
  };

  // dQ = dS K · scale over the group's keys up to N (kDqCols columns at a time), staged in the
  // chunk's q buffer and written by one TMA store; with several groups staged in fp32 over the q
  // and dO buffers and added into the accumulator by one TMA reduce-add. The protocol waits for the
  // store before releasing the chunk's stage.
  auto dq_store = [&](int c, int st) {
    auto& ch = sh.chunk[st];
    Tensor sQ = make_tensor(make_smem_ptr(ch.q), typename Tr::SmemLayoutRows{});
    Tensor sdS = make_tensor(make_smem_ptr(sh.ds[st]), typename Tr::SmemLayoutDS{});
    Tensor sKt = make_tensor(make_smem_ptr(sh.kv[kvs].k), typename Tr::SmemLayoutKeysT{});
    constexpr int kDqCols = Tr::kDqCols;
    const bool whole = p.key_groups == 1;
    Tensor sdQacc = make_tensor(make_smem_ptr(reinterpret_cast<float*>(ch.q)), typename Tr::SmemLayoutDqAcc{});
    Tensor a_ds = thr_q.partition_fragment_A(sdS);  // (1, 1, kKeys / 16)
#pragma unroll
    for (int part = 0; part < D / kDqCols; ++part) {
      Tensor b_kt = thr_q.partition_fragment_B(
          local_tile(sKt, Shape<Int<kDqCols>, Int<kKeys>>{}, make_coord(part, 0)));  // (1, 1, kKeys / 16)
      zero_fenced(dq);
      wgmma_batch<kKeys / 32>(k32, [&](auto pair) {
#pragma unroll
        for (int kb = 2 * pair; kb < 2 * pair + 2; ++kb) {
          wgmma_call<typename Tr::MmaQ>(uint64_t(a_ds(_0{}, _0{}, kb)), uint64_t(b_kt(_0{}, _0{}, kb)), dq,
                                        GMMA::ScaleOut::One, std::make_index_sequence<kDqCols / 2>{});
        }
      });
      warpgroup_wait<0>();
      fence(dq);
#pragma unroll
      for (int jj = 0; jj < kDqCols / 8; ++jj) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = warp * 16 + g + 8 * r, col = part * kDqCols + jj * 8 + 2 * t;
          const float x = dq[jj * 4 + 2 * r] * p.scale, y = dq[jj * 4 + 2 * r + 1] * p.scale;
          if (whole) {
            *reinterpret_cast<uint32_t*>(&sQ(row, col)) = pack2(x, y, static_cast<T*>(nullptr));
          } else {
            *reinterpret_cast<float2*>(&sdQacc(row, col)) = make_float2(x, y);
          }
        }
      }
    }
    tma_store_fence();
    cutlass::arch::NamedBarrier::sync(128, 1 + cw);
    if (lane_wg == 0) {
      if (whole) {
        Tensor gdQ = local_tile(mdQ(_, _, h, b), Shape<Int<kRows>, Int<D>>{}, make_coord(c, 0));
        auto [tg, ts] = tma_partition(p.tma_dq, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gdQ));
        copy(p.tma_dq, ts, tg);
      } else {
        Tensor gdQ = local_tile(mdQacc(_, _, h, b), Shape<Int<kRows>, Int<D>>{}, make_coord(c, 0));
        auto [tg, ts] = tma_partition(p.tma_dq_accum, _0{}, Layout<_1>{}, group_modes<0, 2>(sdQacc),
                                      group_modes<0, 2>(gdQ));
        copy(p.tma_dq_accum, ts, tg);
      }
      tma_store_arrive();
    }
    __syncwarp();
  };

  // dK · scale and dV, straight from the accumulators (each key's row is written once).
  auto end = [&](int) {
#pragma unroll
    for (int i = 0; i < Tr::kBlocksPerWg; ++i) {
      const int j = Tr::kHeadPerWg ? i : cw + Tr::kConsumers * i;
      if (j >= Tr::kBlocks || j * kRows >= keys) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int key = key0 + j * kRows + warp * 16 + g + 8 * r;
        if (key >= N) continue;
        // One pointer per row and immediate offsets: column addresses computed apart were hoisted to
        // the kernel's start as 64-bit values and spilled.
        uint32_t* dk_row = reinterpret_cast<uint32_t*>(p.dk + (int64_t(bh) * N + key) * D) + t;
        uint32_t* dv_row = reinterpret_cast<uint32_t*>(p.dv + (int64_t(bh) * N + key) * D) + t;
#pragma unroll
        for (int jj = 0; jj < D / 8; ++jj) {
          dk_row[jj * 4] =
              pack2(dk[i][jj * 4 + 2 * r] * p.scale, dk[i][jj * 4 + 2 * r + 1] * p.scale, static_cast<T*>(nullptr));
          dv_row[jj * 4] = pack2(dv[i][jj * 4 + 2 * r], dv[i][jj * 4 + 2 * r + 1], static_cast<T*>(nullptr));
        }
      }
    }
  };

  ConsumerSync<typename Tr::Protocol> sync{{cw, &sh.bars}};
  Tr::Protocol::consumer(sync, sh.bars, walk, shape, cw,
                         protocol::BwdBody{begin, chunk_start, products, bias_partials, dq_store, end});
}

}  // namespace vitfast::attention::sm90
