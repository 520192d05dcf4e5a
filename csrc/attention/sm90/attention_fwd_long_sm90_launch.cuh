#pragma once
// Host half of the sm90 forward for N > 256 (and for fp16 accumulators at every N): TMA descriptors
// over q, k, v and out as their strides lie, the key tiles sized to N, the persistent grid, the
// launch. Included by one .cu file per dtype.
#include "attention/sm90/attention_fwd_long_sm90.cuh"
#include "attention/sm90/attention_fwd_sm90_launch.cuh"
#include "attention/sm90/attention_sm90.h"

namespace vitfast::attention::sm90 {

template <class T, int D, bool kF16Acc>
int launch_fwd_long(const AttnFwdParams& p, cudaStream_t stream) {
  using Tr = FwdLongTraits<T, D>;
  FwdLongParams90<T, D> k{};
  const int status = fill_fwd<T, D>(k, p, typename Tr::SmemLayoutRows{}, typename Tr::SmemLayoutRows{},
                                    typename Tr::SmemLayoutVt{}, Tr::kTileRows);
  if (status != kOk) return status;
  k.chunks = (p.N + 63) / 64;
  k.key_tiles = (k.chunks + Tr::kChunks - 1) / Tr::kChunks;
  return launch_persistent(attention_fwd_long_sm90_kernel<T, D, kF16Acc>, k, k.tiles, Tr::kThreads, Tr::kSmemBytes, stream);
}

// N past the whole-head kernel's 256 keys; with fp16 accumulators (kF16Acc) every N from 1.
template <class T, bool kF16Acc = false>
int launch_fwd_long_typed(const AttnFwdParams& p, cudaStream_t stream) {
  if (p.N < 1 || p.N > kMaxLongKeys || (!kF16Acc && p.N <= kMaxKeys)) return kNotBuilt;
  return with_head_dim(
      p.d, [&](auto d) { return launch_fwd_long<T, decltype(d)::value, kF16Acc>(p, stream); }, NotBuilt{});
}

}  // namespace vitfast::attention::sm90
