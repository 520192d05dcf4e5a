#pragma once
// The control skeletons of the Hopper attention kernels: each role's walk over its CTA's work, its
// mbarrier waits, arrivals, expected transaction bytes, TMA fills and stores, and where the math goes
// (the body's hooks). Written once, over a Sync policy: the kernels compile them with CUTLASS's
// barriers (sm90_sync.cuh), and tests/ops/protocol/ compiles the same functions on the host with a
// recording model that runs the roles under many interleavings and checks the protocol
// (tests/ops/test_attention_protocol.py). No CUDA or CuTe here, so g++ compiles it too.
//
// The Sync calls, and what the model checks of each (the kernels' policy ignores what it need not do):
//   init(bar, arrivals), releases(bar, buf)  a barrier's arrivals per phase; the buffers an arrival on
//                                    it hands back (model only)
//   wait(bar, k)                     until phase k has completed (the hardware's parity k & 1)
//   expect(bar, k, bytes)            the producer's arrive-and-expect-tx on phase k
//   fill(bar, buf, bytes, load)      one TMA box of `bytes` into buf, completing on bar (load(bar)
//                                    issues it)
//   arrive(bar, k, who)              a consumer's release of phase k: by its elected thread (kOne) or by
//                                    each of its four warps (kEachWarp, four arrivals)
//   read(buf), done(buf)             a consumer starts and ends reading buf (model only)
//   write(buf)                       a consumer writes buf in shared memory (model only)
//   store(buf), store_wait()         a TMA store reads buf; the consumer waits for its stores
//   sync_role(), sync_consumers()    a named barrier of one consumer warpgroup / of both
//   item(i)                          the role starts work item i (named by the debug build's traps)
// Each protocol's bar_name(index, stage) names the index-th barrier of its Bars for those traps.
#include <cstdint>

#include "attention/attention_path.h"

#if defined(__CUDACC__)
#define VF_PROTOCOL __device__ __forceinline__
#else
#define VF_PROTOCOL inline
#endif

namespace vitfast::attention::sm90::protocol {

// A shared-memory buffer: its kind, its stage and its slot (a Q half, a K/V chunk).
enum Kind : int { kQ, kK, kV, kDout, kO, kDs };
struct Buf {
  int kind, stage, slot;
};

// Who makes a consumer's arrival: its elected thread, or each of its four warps.
enum Arrivals : int { kOne = 1, kEachWarp = 4 };

constexpr int kRows = 64;       // query rows per consumer warpgroup, keys per chunk
constexpr int kConsumers = 2;   // consumer warpgroups

// A persistent CTA's work items: first(), first() + stride(), ... below count(). The skeletons take any
// type with these three: the kernels' (sm90_sync.cuh) reads blockIdx, gridDim and the count in the
// kernel's parameters where they lie, so none of them holds a register through the loop.
struct Walk {
  int first_, stride_, count_;
  VF_PROTOCOL int first() const { return first_; }
  VF_PROTOCOL int stride() const { return stride_; }
  VF_PROTOCOL int count() const { return count_; }
};

// Key tile j of a head in the key-tiled forward: its first 64-key chunk and its chunk count (chunks
// split evenly, the first chunks % key_tiles tiles one wider).
struct KeyTile {
  int c0, n;
};
VF_PROTOCOL KeyTile key_tile(int j, int chunks, int key_tiles) {
  const int base = chunks / key_tiles, extra = chunks % key_tiles;
  return {j * base + (j < extra ? j : extra), base + (j < extra ? 1 : 0)};
}

// The hooks a kernel hands a skeleton: named callables (lambdas capturing the kernel's state), so the
// skeleton's calls read as load.q(...), body.scores(...).
template <class Q, class K, class V>
struct LoadQKV {
  Q q;
  K k;
  V v;
};
template <class Q, class K, class V>
LoadQKV(Q, K, V) -> LoadQKV<Q, K, V>;

// ---- the whole-head forward (attention_fwd_sm90.cuh) ------------------------------------------------
// Tiles of (batch·head, kQHalves · 64 query rows); kStages stages of Q halves, the head's K (full_qk)
// and V (full_v). A stage is released by one arrival per Q half: its consumer's, after its O store
// has read the staging. kHeadPerWg: a tile is one head of one consumer, the two taking alternate tiles.
// kIdleHalf: the key tile's N (an odd count of 64-row halves) leaves a tile's second half wholly past
// N, so its consumer computes nothing; it waits for the stage's fills before releasing it all the
// same, so its arrivals keep the stage's phases (without the waits it released the stage of its next
// tiles at once, ahead of the other consumer: the first GPU run's launch failure). Where no half can
// lie past N the branch is not compiled (its waits made ptxas spill at 256 keys).
template <class Scores, class Values, class Store>
struct FwdBody {
  Scores scores;
  Values values;
  Store store;
};
template <class Scores, class Values, class Store>
FwdBody(Scores, Values, Store) -> FwdBody<Scores, Values, Store>;

template <int kStages, int kQHalves, bool kHeadPerWg, bool kIdleHalf, int kQBox, int kKVBox>
struct FwdProtocol {
  template <class Bar>
  struct Bars {
    Bar full_qk[kStages];  // Q and K landed
    Bar full_v[kStages];   // V landed
    Bar empty[kStages];    // its consumers done, their O stores have read the staging
  };
  // I: int, or const int& where the kernel reads the fields from its parameters.
  template <class I = int>
  struct ShapeOf {
    I N, m_blocks;  // m_blocks: tiles per head
  };
  using Shape = ShapeOf<>;
  static constexpr int kQBytes = kQHalves * kQBox + kKVBox;  // full_qk's transaction bytes
  static VF_PROTOCOL const char* bar_name(int index, int& stage) {
    stage = index % kStages;
    return index < kStages ? "full_qk" : index < 2 * kStages ? "full_v" : "empty";
  }

  template <class Sync, class Bar>
  static VF_PROTOCOL void init(Sync& sync, Bars<Bar>& b) {
    for (int s = 0; s < kStages; ++s) {
      sync.init(b.full_qk[s], 1);
      sync.init(b.full_v[s], 1);
      sync.init(b.empty[s], kQHalves);
      for (int h = 0; h < kQHalves; ++h) sync.releases(b.empty[s], Buf{kQ, s, h});
      sync.releases(b.empty[s], Buf{kK, s, 0});
      sync.releases(b.empty[s], Buf{kV, s, 0});
    }
  }

  // load.q(bar, tile, stage, half), load.k(bar, tile, stage), load.v(bar, tile, stage): one TMA box each.
  template <class Sync, class Bar, class W, class S, class Load>
  static VF_PROTOCOL void producer(Sync& sync, Bars<Bar>& b, const W& w, const S&, Load&& load) {
    int it = 0;
    for (int tile = w.first(); tile < w.count(); tile += w.stride(), ++it) {
      const int st = it % kStages, use = it / kStages;
      sync.item(tile);
      sync.wait(b.empty[st], use - 1);
      sync.expect(b.full_qk[st], use, kQBytes);
      for (int half = 0; half < kQHalves; ++half) {
        sync.fill(b.full_qk[st], Buf{kQ, st, half}, kQBox, [&](auto& bar) { load.q(bar, tile, st, half); });
      }
      sync.fill(b.full_qk[st], Buf{kK, st, 0}, kKVBox, [&](auto& bar) { load.k(bar, tile, st); });
      sync.expect(b.full_v[st], use, kKVBox);
      sync.fill(b.full_v[st], Buf{kV, st, 0}, kKVBox, [&](auto& bar) { load.v(bar, tile, st); });
    }
  }

  // body.scores(tile, stage, half, row0): S = Q Kᵀ and the softmax; body.values(stage): O = P V;
  // body.store(tile, stage, half, row0): O into the Q half's staging and its TMA store issued.
  template <class Sync, class Bar, class W, class S, class Body>
  static VF_PROTOCOL void consumer(Sync& sync, Bars<Bar>& b, const W& w, const S& shape, int cw,
                                   Body&& body) {
    int it = 0;
    for (int tile = w.first(); tile < w.count(); tile += w.stride(), ++it) {
      const int st = it % kStages, use = it / kStages;
      if (kHeadPerWg && it % kConsumers != cw) continue;  // the other consumer's head
      sync.item(tile);
      const int half = kHeadPerWg ? 0 : cw;
      const int row0 = ((tile % shape.m_blocks) * kQHalves + half) * kRows;
      if (kIdleHalf && row0 >= shape.N) {  // the tile's second half lies past N
#ifndef VITFAST_PROTOCOL_OLD_IDLE_RELEASE  // the first GPU run's defect, built only by the model's test
        sync.wait(b.full_qk[st], use);
        sync.wait(b.full_v[st], use);
#endif
        sync.arrive(b.empty[st], use, kOne);
        continue;
      }
      sync.wait(b.full_qk[st], use);
      sync.read(Buf{kQ, st, half});
      sync.read(Buf{kK, st, 0});
      body.scores(tile, st, half, row0);
      sync.wait(b.full_v[st], use);
      sync.read(Buf{kV, st, 0});
      body.values(st);
      body.store(tile, st, half, row0);
      sync.store(Buf{kQ, st, half});
      sync.store_wait();  // the staging read before the producer may refill the stage
      sync.arrive(b.empty[st], use, kOne);
    }
    sync.store_wait();
  }
};

// ---- the key-tiled forward (attention_fwd_long_sm90.cuh) --------------------------------------------
// Tiles of (batch·head, 128 query rows): two Q stages (both halves, full_q / empty_q, released by each
// consumer after its O store) and two K/V stages of up to kChunks 64-key chunks (full_k, full_v,
// released by every consumer warp after its wgmmas read them). The consumer whose rows lie past N
// follows every fill before releasing it.
template <class Begin, class Scores, class Values, class Store>
struct FwdLongBody {
  Begin begin;
  Scores scores;
  Values values;
  Store store;
};
template <class Begin, class Scores, class Values, class Store>
FwdLongBody(Begin, Scores, Values, Store) -> FwdLongBody<Begin, Scores, Values, Store>;

template <int kChunks, int kChunkBox>
struct FwdLongProtocol {
  static constexpr int kQStages = 2, kKvStages = 2;
  static VF_PROTOCOL const char* bar_name(int index, int& stage) {
    const char* names[] = {"full_q", "empty_q", "full_k", "full_v", "empty_kv"};
    stage = index % 2;
    return names[index / 2];
  }
  template <class Bar>
  struct Bars {
    Bar full_q[kQStages];     // both Q halves landed
    Bar empty_q[kQStages];    // both consumers done, their O stores have read the staging
    Bar full_k[kKvStages];    // a key tile's K chunks landed
    Bar full_v[kKvStages];    // its V chunks landed
    Bar empty_kv[kKvStages];  // every consumer warp's wgmmas have read them
  };
  template <class I = int>
  struct ShapeOf {
    I N, m_blocks, chunks, key_tiles;
  };
  using Shape = ShapeOf<>;

  template <class Sync, class Bar>
  static VF_PROTOCOL void init(Sync& sync, Bars<Bar>& b) {
    for (int s = 0; s < kQStages; ++s) {
      sync.init(b.full_q[s], 1);
      sync.init(b.empty_q[s], kConsumers);
      for (int h = 0; h < kConsumers; ++h) sync.releases(b.empty_q[s], Buf{kQ, s, h});
    }
    for (int s = 0; s < kKvStages; ++s) {
      sync.init(b.full_k[s], 1);
      sync.init(b.full_v[s], 1);
      sync.init(b.empty_kv[s], kConsumers * kEachWarp);
      for (int c = 0; c < kChunks; ++c) {
        sync.releases(b.empty_kv[s], Buf{kK, s, c});
        sync.releases(b.empty_kv[s], Buf{kV, s, c});
      }
    }
  }

  // load.q(bar, tile, stage, half); load.k(bar, tile, stage, slot, chunk), load.v(...): one box each.
  template <class Sync, class Bar, class W, class S, class Load>
  static VF_PROTOCOL void producer(Sync& sync, Bars<Bar>& b, const W& w, const S& shape, Load&& load) {
    int it = 0, kv_it = 0;
    for (int tile = w.first(); tile < w.count(); tile += w.stride(), ++it) {
      const int qs = it % kQStages, q_use = it / kQStages;
      sync.item(tile);
      sync.wait(b.empty_q[qs], q_use - 1);
      sync.expect(b.full_q[qs], q_use, kConsumers * kChunkBox);
      for (int half = 0; half < kConsumers; ++half) {
        sync.fill(b.full_q[qs], Buf{kQ, qs, half}, kChunkBox, [&](auto& bar) { load.q(bar, tile, qs, half); });
      }
      for (int j = 0; j < shape.key_tiles; ++j, ++kv_it) {
        const int st = kv_it % kKvStages, use = kv_it / kKvStages;
        const KeyTile kt = key_tile(j, shape.chunks, shape.key_tiles);
        sync.wait(b.empty_kv[st], use - 1);
        sync.expect(b.full_k[st], use, kt.n * kChunkBox);
        for (int c = 0; c < kt.n; ++c) {
          sync.fill(b.full_k[st], Buf{kK, st, c}, kChunkBox, [&](auto& bar) { load.k(bar, tile, st, c, kt.c0 + c); });
        }
        sync.expect(b.full_v[st], use, kt.n * kChunkBox);
        for (int c = 0; c < kt.n; ++c) {
          sync.fill(b.full_v[st], Buf{kV, st, c}, kChunkBox, [&](auto& bar) { load.v(bar, tile, st, c, kt.c0 + c); });
        }
      }
    }
  }

  // body.begin(tile, q_stage, row0): the tile's running maxima, sums and O reset; per key tile j
  // body.scores(j, kv_stage, kt): S = Q Kᵀ, the online softmax, O rescaled; body.values(kv_stage, kt):
  // O += P V; body.store(tile, q_stage, row0): O / l into the Q half's staging, its TMA store issued.
  template <class Sync, class Bar, class W, class S, class Body>
  static VF_PROTOCOL void consumer(Sync& sync, Bars<Bar>& b, const W& w, const S& shape, int cw,
                                   Body&& body) {
    int it = 0, kv_it = 0;
    for (int tile = w.first(); tile < w.count(); tile += w.stride(), ++it) {
      const int qs = it % kQStages, q_use = it / kQStages;
      sync.item(tile);
      const int row0 = ((tile % shape.m_blocks) * kConsumers + cw) * kRows;
      if (row0 >= shape.N) {  // the tile's second half lies past N: follow the fills, release them
        for (int j = 0; j < shape.key_tiles; ++j, ++kv_it) {
          const int st = kv_it % kKvStages, use = kv_it / kKvStages;
          sync.wait(b.full_k[st], use);
          sync.wait(b.full_v[st], use);
          sync.arrive(b.empty_kv[st], use, kEachWarp);
        }
        sync.wait(b.full_q[qs], q_use);
        sync.arrive(b.empty_q[qs], q_use, kOne);
        continue;
      }
      sync.wait(b.full_q[qs], q_use);
      sync.read(Buf{kQ, qs, cw});
      body.begin(tile, qs, row0);
      for (int j = 0; j < shape.key_tiles; ++j, ++kv_it) {
        const int st = kv_it % kKvStages, use = kv_it / kKvStages;
        const KeyTile kt = key_tile(j, shape.chunks, shape.key_tiles);
        sync.wait(b.full_k[st], use);
        for (int c = 0; c < kt.n; ++c) sync.read(Buf{kK, st, c});
        body.scores(j, st, kt);
        sync.wait(b.full_v[st], use);
        for (int c = 0; c < kt.n; ++c) sync.read(Buf{kV, st, c});
        body.values(st, kt);
        sync.arrive(b.empty_kv[st], use, kEachWarp);
      }
      body.store(tile, qs, row0);
      sync.store(Buf{kQ, qs, cw});
      sync.store_wait();
      sync.arrive(b.empty_q[qs], q_use, kOne);
    }
    sync.store_wait();
  }
};

// ---- the backward (attention_bwd_sm90.cuh) ----------------------------------------------------------
// Work items of (batch·head, key group): kKvStages stages of the group's K and V (full_kv, empty_kv),
// then the head's 64-query chunks of q, dO and O through two stages (full, empty), each released by
// kArrivals consumers. Both consumers write the chunk's dS (by chunk parity) and meet at a named
// barrier; one of them (by the chunk's parity) takes dQ, staged over the chunk's q (and dO, in fp32
// for a split head) and stored by TMA, and the other adds dS into the bias partial sums.
// kHeadPerWg: each consumer takes every other work item whole, on K/V and chunk stage cw alone.
template <class K, class V, class Rows>
struct BwdLoad {
  K k;
  V v;
  Rows rows;
};
template <class K, class V, class Rows>
BwdLoad(K, V, Rows) -> BwdLoad<K, V, Rows>;
template <class Begin, class ChunkStart, class Products, class BiasPartials, class Dq, class End>
struct BwdBody {
  Begin begin;
  ChunkStart chunk_start;
  Products products;
  BiasPartials bias_partials;
  Dq dq;
  End end;
};
template <class Begin, class ChunkStart, class Products, class BiasPartials, class Dq, class End>
BwdBody(Begin, ChunkStart, Products, BiasPartials, Dq, End) -> BwdBody<Begin, ChunkStart, Products, BiasPartials, Dq, End>;

template <int kKvStages, bool kHeadPerWg, int kRowsBox, int kKeysBox>
struct BwdProtocol {
  static constexpr int kArrivals = kHeadPerWg ? 1 : kConsumers;
  static constexpr int kDsWriters = kHeadPerWg ? 1 : kConsumers;  // consumers writing a chunk's dS
  static VF_PROTOCOL const char* bar_name(int index, int& stage) {
    if (index < 2 * kKvStages) {
      stage = index % kKvStages;
      return index < kKvStages ? "full_kv" : "empty_kv";
    }
    stage = (index - 2 * kKvStages) % 2;
    return index < 2 * kKvStages + 2 ? "full" : "empty";
  }
  template <class Bar>
  struct Bars {
    Bar full_kv[kKvStages];
    Bar empty_kv[kKvStages];
    Bar full[2];   // a chunk's q, dO, O landed
    Bar empty[2];  // its consumers done, the dQ store has read its staging
  };
  // key_groups == 1: dQ stored in q's dtype (staged over q), else added in fp32 (staged over q and dO).
  template <class I = int>
  struct ShapeOf {
    I chunks, key_groups;
  };
  using Shape = ShapeOf<>;

  template <class Sync, class Bar>
  static VF_PROTOCOL void init(Sync& sync, Bars<Bar>& b) {
    for (int s = 0; s < kKvStages; ++s) {
      sync.init(b.full_kv[s], 1);
      sync.init(b.empty_kv[s], kArrivals);
      sync.releases(b.empty_kv[s], Buf{kK, s, 0});
      sync.releases(b.empty_kv[s], Buf{kV, s, 0});
    }
    for (int s = 0; s < 2; ++s) {
      sync.init(b.full[s], 1);
      sync.init(b.empty[s], kArrivals);
      sync.releases(b.empty[s], Buf{kQ, s, 0});
      sync.releases(b.empty[s], Buf{kDout, s, 0});
      sync.releases(b.empty[s], Buf{kO, s, 0});
    }
  }

  // load.k(bar, work, stage), load.v(bar, work, stage); load.rows(bar, kind, work, chunk, stage): q, dO
  // or O's chunk.
  template <class Sync, class Bar, class W, class S, class Load>
  static VF_PROTOCOL void producer(Sync& sync, Bars<Bar>& b, const W& w, const S& shape, Load&& load) {
    int head_it = 0, chunk_it = 0;
    for (int work = w.first(); work < w.count(); work += w.stride(), ++head_it) {
      const int kvs = head_it % kKvStages, kv_use = head_it / kKvStages;
      sync.item(work);
      sync.wait(b.empty_kv[kvs], kv_use - 1);
      sync.expect(b.full_kv[kvs], kv_use, 2 * kKeysBox);
      sync.fill(b.full_kv[kvs], Buf{kK, kvs, 0}, kKeysBox, [&](auto& bar) { load.k(bar, work, kvs); });
      sync.fill(b.full_kv[kvs], Buf{kV, kvs, 0}, kKeysBox, [&](auto& bar) { load.v(bar, work, kvs); });
      for (int c = 0; c < shape.chunks; ++c, ++chunk_it) {
        const int st = chunk_it % 2, use = chunk_it / 2;
        sync.wait(b.empty[st], use - 1);
        sync.expect(b.full[st], use, 3 * kRowsBox);
        sync.fill(b.full[st], Buf{kQ, st, 0}, kRowsBox, [&](auto& bar) { load.rows(bar, kQ, work, c, st); });
        sync.fill(b.full[st], Buf{kDout, st, 0}, kRowsBox, [&](auto& bar) { load.rows(bar, kDout, work, c, st); });
        sync.fill(b.full[st], Buf{kO, st, 0}, kRowsBox, [&](auto& bar) { load.rows(bar, kO, work, c, st); });
      }
    }
  }

  // body.begin(work, kv_stage): dK, dV zeroed; body.chunk_start(c, stage): the chunk's lse read;
  // body.products(c, stage): delta, Sᵀ, dPᵀ, dV, dK and the chunk's dS (into dS buffer `stage`);
  // body.bias_partials(c, stage); body.dq(c, stage): dQ staged and its TMA store (or reduce-add) issued;
  // body.end(work): dK, dV written.
  template <class Sync, class Bar, class W, class S, class Body>
  static VF_PROTOCOL void consumer(Sync& sync, Bars<Bar>& b, const W& w, const S& shape, int cw,
                                   Body&& body) {
    int head_it = 0, chunk_it = 0;
    for (int work = w.first(); work < w.count(); work += w.stride(), ++head_it) {
      if (kHeadPerWg && head_it % kConsumers != cw) {  // the other consumer's work item
        chunk_it += shape.chunks;
        continue;
      }
      const int kvs = head_it % kKvStages, kv_use = head_it / kKvStages;
      sync.item(work);
      body.begin(work, kvs);
      sync.wait(b.full_kv[kvs], kv_use);
      sync.read(Buf{kK, kvs, 0});
      sync.read(Buf{kV, kvs, 0});
      for (int c = 0; c < shape.chunks; ++c, ++chunk_it) {
        const int st = chunk_it % 2, use = chunk_it / 2;
        body.chunk_start(c, st);
        sync.wait(b.full[st], use);
        sync.read(Buf{kQ, st, 0});
        sync.read(Buf{kDout, st, 0});
        sync.read(Buf{kO, st, 0});
        sync.write(Buf{kDs, st, cw});  // dS buffer `st`, the rows of this consumer's key blocks
        body.products(c, st);
        // q, dO, O read by this consumer's wgmmas; its dS written, seen by the other after the barrier.
        sync.done(Buf{kQ, st, 0});
        sync.done(Buf{kDout, st, 0});
        sync.done(Buf{kO, st, 0});
        sync.done(Buf{kDs, st, cw});
        if (kHeadPerWg) {
          sync.sync_role();
        } else {
          sync.sync_consumers();
        }
        for (int r = 0; r < kDsWriters; ++r) sync.read(Buf{kDs, st, kHeadPerWg ? cw : r});
        if (!kHeadPerWg && c % kConsumers != cw) {  // the other consumer takes this chunk's dQ
          sync.arrive(b.empty[st], use, kOne);
          body.bias_partials(c, st);
          for (int r = 0; r < kDsWriters; ++r) sync.done(Buf{kDs, st, r});
          continue;
        }
        if (kHeadPerWg) body.bias_partials(c, st);
        sync.write(Buf{kQ, st, 0});
        if (shape.key_groups != 1) sync.write(Buf{kDout, st, 0});
        body.dq(c, st);
        for (int r = 0; r < kDsWriters; ++r) sync.done(Buf{kDs, st, kHeadPerWg ? cw : r});
        sync.store(Buf{kQ, st, 0});
        if (shape.key_groups != 1) sync.store(Buf{kDout, st, 0});
        sync.store_wait();  // the staging read before the producer may refill the stage
        sync.arrive(b.empty[st], use, kOne);
      }
      sync.sync_role();  // every warp of this consumer is done with the K/V stage
      sync.arrive(b.empty_kv[kvs], kv_use, kOne);
      body.end(work);
    }
    sync.store_wait();
  }
};

// ---- the configurations the kernels instantiate -----------------------------------------------------
// Their traits take these (16-bit elements), so the model checks the protocols the kernels run.

// The whole-head forward's key tile for N (and the one-CTA-per-head backward's): N rounded up to 64, so
// its S registers are sized to the work; 0 past kSm90MaxKeys.
constexpr int fwd_keys(int N) { return N <= 64 ? 64 : N <= kSm90MaxKeys ? (N + 63) / 64 * 64 : 0; }

// The whole-head forward at head dim D and key tile kKeys: two stages where they fit in the 227 KiB a
// CTA may hold (all but d = 96, 128 at 256 keys); four, two per consumer, with a head per consumer.
template <int D, int kKeys>
struct FwdConfig {
  static constexpr bool kHeadPerWg = kKeys == 64;
  static constexpr int kQHalves = kHeadPerWg ? 1 : kConsumers;
  static constexpr int kQBox = kRows * D * 2;
  static constexpr int kKVBox = kKeys * D * 2;
  static constexpr int kStageBytes = kQHalves * kQBox + 2 * kKVBox;
  static constexpr int kStages = kHeadPerWg ? 4 : 2 * kStageBytes + 1024 <= 227 * 1024 ? 2 : 1;
  // N in (kKeys - 64, kKeys] over tiles of two 64-row halves: at 192 keys (N in 129..192) the second
  // half of a head's last tile starts at row 192, past N; at 128 and 256 keys no half lies past N.
  static constexpr bool kIdleHalf = !kHeadPerWg && (kKeys / 64) % 2 == 1;
  using Protocol = FwdProtocol<kStages, kQHalves, kHeadPerWg, kIdleHalf, kQBox, kKVBox>;
};

// The key-tiled forward at head dim D: 64-key chunks per key tile, as many as the S registers (32 per
// chunk) and two K/V stages allow next to O (D / 2 registers) and Q's fragments (D / 4).
template <int D>
struct FwdLongConfig {
  static constexpr int kChunks = D <= 64 ? 4 : D <= 96 ? 3 : 2;
  static constexpr int kChunkBox = kRows * D * 2;
  using Protocol = FwdLongProtocol<kChunks, kChunkBox>;
};

// The backward at head dim D and key tile kKeys: a head per consumer at 64 keys but at d = 128 (where
// ptxas spilled it); a second K/V stage where it fits beside two chunk stages (q, dO, O), two dS
// tiles, the lse and delta rows, the barriers and the base's alignment.
template <int D, int kKeys>
struct BwdConfig {
  static constexpr bool kHeadPerWg = kKeys == 64 && D < 128;
  static constexpr int kRowsBox = kRows * D * 2;
  static constexpr int kKeysBox = kKeys * D * 2;
  static constexpr int kFixedBytes = 2 * 3 * kRowsBox + 2 * kRows * kKeys * 2 + 2 * 2 * kRows * 4 + 1024 + 64;
  static constexpr int kKvStages = kFixedBytes + 2 * 2 * kKeysBox <= 227 * 1024 ? 2 : 1;
  using Protocol = BwdProtocol<kKvStages, kHeadPerWg, kRowsBox, kKeysBox>;
};

}  // namespace vitfast::attention::sm90::protocol
