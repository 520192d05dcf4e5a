#pragma once
// Host half of the sm90 forward for N > 256: TMA descriptors over q, k, v and out as their strides
// lie, the key tiles sized to N, the persistent grid, the launch. Included by one .cu file per dtype.
#include "attention/sm90/attention_fwd_long_sm90.cuh"
#include "attention/sm90/attention_sm90.h"

namespace vitfast::attention::sm90 {

template <class T, int D>
int launch_fwd_long(const AttnFwdParams& p, cudaStream_t stream) {
  using Tr = FwdLongTraits<T, D>;
  FwdLongParams90<T, D> k{};
  k.tma_q = make_tma_copy(SM90_TMA_LOAD{}, rows_tensor<D>(static_cast<const T*>(p.q), p.qs, p.N, p.H, p.B),
                          typename Tr::SmemLayoutRows{});
  k.tma_k = make_tma_copy(SM90_TMA_LOAD{}, rows_tensor<D>(static_cast<const T*>(p.k), p.ks, p.N, p.H, p.B),
                          typename Tr::SmemLayoutRows{});
  k.tma_v = make_tma_copy(SM90_TMA_LOAD{}, cols_tensor<D>(static_cast<const T*>(p.v), p.vs, p.N, p.H, p.B),
                          typename Tr::SmemLayoutVt{});
  k.tma_o = make_tma_copy(SM90_TMA_STORE{}, rows_tensor<D>(static_cast<T*>(p.out), p.os, p.N, p.H, p.B),
                          typename Tr::SmemLayoutRows{});
  k.bias = static_cast<const T*>(p.bias);
  k.bias_s = p.bias_s;
  k.bias_col = p.bias_col;
  k.lse = p.lse;
  k.B = p.B;
  k.H = p.H;
  k.N = p.N;
  k.m_blocks = (p.N + Tr::kTileRows - 1) / Tr::kTileRows;
  k.chunks = (p.N + 63) / 64;
  k.key_tiles = (k.chunks + Tr::kChunks - 1) / Tr::kChunks;
  const int64_t tiles = int64_t(p.B) * p.H * k.m_blocks;
  if (tiles > INT32_MAX) return kRefused;
  k.tiles = static_cast<int>(tiles);
  k.scale_log2 = p.scale * 1.4426950408889634f;

  return launch_persistent(attention_fwd_long_sm90_kernel<T, D>, k, k.tiles, Tr::kThreads, Tr::kSmemBytes, stream);
}

template <class T>
int launch_fwd_long_typed(const AttnFwdParams& p, cudaStream_t stream) {
  if (p.N <= kMaxKeys || p.N > kMaxLongKeys) return kNotBuilt;
  return with_head_dim(p.d, [&](auto d) { return launch_fwd_long<T, decltype(d)::value>(p, stream); });
}

}  // namespace vitfast::attention::sm90
