#pragma once
// Host half of the sm90 forward: TMA descriptors over q, k, v and out as their strides lie (a view of
// one qkv projection, (B, N, 3, H, d), needs no copy), the persistent grid, the launch. Included by
// one .cu file per dtype.
#include "attention/sm90/attention_fwd_sm90.cuh"
#include "attention/sm90/attention_sm90.h"

namespace vitfast::attention::sm90 {

// What both forwards' parameters hold: TMA descriptors over q and out (rows: a 64-row tile), k (its
// tile in the kernel, k_tile) and v (v_tile), the bias, the lse, the shape and the grid of tiles of
// tile_rows queries. kRefused past 2^31 - 1 tiles.
template <class T, int D, class K, class RowsL, class KL, class VL>
int fill_fwd(K& k, const AttnFwdParams& p, RowsL rows, KL k_tile, VL v_tile, int tile_rows) {
  k.tma_q = make_tma_copy(SM90_TMA_LOAD{}, rows_tensor<D>(static_cast<const T*>(p.q), p.qs, p.N, p.H, p.B), rows);
  k.tma_k = make_tma_copy(SM90_TMA_LOAD{}, rows_tensor<D>(static_cast<const T*>(p.k), p.ks, p.N, p.H, p.B), k_tile);
  k.tma_v = make_tma_copy(SM90_TMA_LOAD{}, cols_tensor<D>(static_cast<const T*>(p.v), p.vs, p.N, p.H, p.B), v_tile);
  k.tma_o = make_tma_copy(SM90_TMA_STORE{}, rows_tensor<D>(static_cast<T*>(p.out), p.os, p.N, p.H, p.B), rows);
  k.bias = static_cast<const T*>(p.bias);
  k.bias_s = p.bias_s;
  k.bias_col = p.bias_col;
  k.lse = p.lse;
  k.B = p.B;
  k.H = p.H;
  k.N = p.N;
  k.m_blocks = (p.N + tile_rows - 1) / tile_rows;
  const int64_t tiles = int64_t(p.B) * p.H * k.m_blocks;
  if (tiles > INT32_MAX) return kRefused;
  k.tiles = static_cast<int>(tiles);
  k.scale_log2 = p.scale * 1.4426950408889634f;
  return kOk;
}

template <class T, int D, int kKeys>
int launch_fwd(const AttnFwdParams& p, cudaStream_t stream) {
  using Tr = FwdTraits<T, D, kKeys>;
  FwdParams90<T, D, kKeys> k{};
  const int status = fill_fwd<T, D>(k, p, typename Tr::SmemLayoutQ{}, typename Tr::SmemLayoutK{},
                                    typename Tr::SmemLayoutVt{}, Tr::kTileRows);
  if (status != kOk) return status;
  return launch_persistent(attention_fwd_sm90_kernel<T, D, kKeys>, k, k.tiles, Tr::kThreads, Tr::kSmemBytes, stream);
}

// The key tile by N (the S registers sized to the work) and the head dim.
template <class T>
int launch_fwd_typed(const AttnFwdParams& p, cudaStream_t stream) {
  return with_head_dim_and_keys(p.d, p.N, [&](auto d, auto keys) {
    return launch_fwd<T, decltype(d)::value, decltype(keys)::value>(p, stream);
  });
}

}  // namespace vitfast::attention::sm90
