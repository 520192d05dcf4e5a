#pragma once
// Host half of the sm90 backward: TMA descriptors over q, k, v, dO and O as their strides lie and over
// the contiguous dQ (or its fp32 accumulator, where the head's keys are split into groups), the
// persistent grid, the launch. Included by one .cu file per dtype.
#include "attention/sm90/attention_bwd_sm90.cuh"
#include "attention/sm90/attention_sm90.h"

namespace vitfast::attention::sm90 {

// groups: the head's keys in groups of kKeys, one CTA each (sm90_bwd_key_groups); above one, dQ is added
// into p.dq_accum (fp32, zeroed) instead of written to p.dq.
template <class T, int D, int kKeys>
int launch_bwd(const AttnBwdParams& p, int groups, cudaStream_t stream) {
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
    if (groups == 1) {
      k.tma_dq = make_tma_copy(SM90_TMA_STORE{}, rows(static_cast<T*>(p.dq), dqs), RowsL{});
    } else {
      if (p.dq_accum == nullptr) return kNotBuilt;
      k.tma_dq_accum = make_tma_copy(SM90_TMA_REDUCE_ADD{}, rows(p.dq_accum, dqs), typename Tr::SmemLayoutDqAcc{});
    }
    k.bias = static_cast<const T*>(p.bias);
    k.bias_s = p.bias_s;
    k.bias_col = p.bias_col;
    k.lse = p.lse;
    k.dk = static_cast<T*>(p.dk);
    k.dv = static_cast<T*>(p.dv);
    k.dbias = p.dbias;
    k.dbias_f32 = p.dbias_f32;
    k.dbias_part = p.dbias_part;
    k.dbias_slots = p.dbias_slots;
    k.dbias_ld = p.dbias_ld;
    k.B = p.B;
    k.H = p.H;
    k.N = p.N;
    k.chunks = (p.N + Tr::kRows - 1) / Tr::kRows;
    k.key_groups = groups;
    const int64_t works = int64_t(p.B) * p.H * groups;
    if (works > INT32_MAX) return kRefused;
    k.works = static_cast<int>(works);
    k.scale = p.scale;
    k.scale_log2 = p.scale * 1.4426950408889634f;

    return launch_persistent(attention_bwd_sm90_kernel<T, D, kKeys>, k, k.works, Tr::kThreads, Tr::kSmemBytes, stream);
  }
}

// One CTA per head where its keys fit (the key tile by N), else key groups of sm90_bwd_group_keys.
template <class T>
int launch_bwd_typed(const AttnBwdParams& p, cudaStream_t stream) {
  if (p.N > kMaxLongKeys) return kNotBuilt;
  const int groups = sm90_bwd_key_groups(p.d, p.N);
  if (groups == 1) {
    return with_head_dim_and_keys(p.d, p.N, [&](auto d, auto keys) {
      return launch_bwd<T, decltype(d)::value, decltype(keys)::value>(p, 1, stream);
    });
  }
  return with_head_dim(
      p.d,
      [&](auto d) {
        return launch_bwd<T, decltype(d)::value, sm90_bwd_group_keys(decltype(d)::value)>(p, groups, stream);
      },
      NotBuilt{});
}

}  // namespace vitfast::attention::sm90
