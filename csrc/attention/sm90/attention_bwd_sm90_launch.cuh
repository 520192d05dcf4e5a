#pragma once
// Host half of the sm90 backward: TMA descriptors over q, k, v, dO and O as their strides lie and over
// the contiguous dQ, the persistent grid, the launch. Included by one .cu file per dtype.
#include "attention/sm90/attention_bwd_sm90.cuh"
#include "attention/sm90/attention_sm90.h"

namespace vitfast::attention::sm90 {

template <class T, int D, int kKeys>
int launch_bwd(const AttnBwdParams& p, cudaStream_t stream) {
  if constexpr (!sm90_bwd_fits(D, kKeys)) {
    return kNotBuilt;
  } else {
    using Tr = BwdTraits<T, D, kKeys>;
    BwdParams90<T, D, kKeys> k{};
    auto rows = [&](auto* ptr, const Strides3& s) { return rows_tensor<D>(ptr, s, p.N, p.H, p.B); };
    using RowsL = typename Tr::SmemLayoutRows;
    using KeysL = typename Tr::SmemLayoutKeys;
    k.tma_q = make_tma_copy(SM90_TMA_LOAD{}, rows(static_cast<const T*>(p.q), p.qs), RowsL{});
    k.tma_do = make_tma_copy(SM90_TMA_LOAD{}, rows(static_cast<const T*>(p.dout), p.dos), RowsL{});
    k.tma_o = make_tma_copy(SM90_TMA_LOAD{}, rows(static_cast<const T*>(p.out), p.os), RowsL{});
    k.tma_k = make_tma_copy(SM90_TMA_LOAD{}, rows(static_cast<const T*>(p.k), p.ks), KeysL{});
    k.tma_v = make_tma_copy(SM90_TMA_LOAD{}, rows(static_cast<const T*>(p.v), p.vs), KeysL{});
    const Strides3 dqs{int64_t(p.H) * p.N * D, int64_t(p.N) * D, D};
    k.tma_dq = make_tma_copy(SM90_TMA_STORE{}, rows(static_cast<T*>(p.dq), dqs), RowsL{});
    k.bias = static_cast<const T*>(p.bias);
    k.bias_s = p.bias_s;
    k.bias_col = p.bias_col;
    k.lse = p.lse;
    k.dk = static_cast<T*>(p.dk);
    k.dv = static_cast<T*>(p.dv);
    k.dbias = p.dbias;
    k.dbias_f32 = p.dbias_f32;
    k.B = p.B;
    k.H = p.H;
    k.N = p.N;
    k.chunks = (p.N + Tr::kRows - 1) / Tr::kRows;
    k.heads = p.B * p.H;  // the caller checked that B · H fits in int
    k.scale = p.scale;
    k.scale_log2 = p.scale * 1.4426950408889634f;

    return launch_persistent(attention_bwd_sm90_kernel<T, D, kKeys>, k, k.heads, Tr::kThreads, Tr::kSmemBytes, stream);
  }
}

template <class T>
int launch_bwd_typed(const AttnBwdParams& p, cudaStream_t stream) {
  return with_head_dim_and_keys(p.d, p.N, [&](auto d, auto keys) {
    return launch_bwd<T, decltype(d)::value, decltype(keys)::value>(p, stream);
  });
}

}  // namespace vitfast::attention::sm90
