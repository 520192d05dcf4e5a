// Instantiations and launcher of the forward kernel: {fp16, bf16} x d in {32, 64, 80, 96, 128},
// plus fp16 with fp16 accumulators, each with and without the extras (bias, logits output, a scale
// <= 0): 30 kernels; the rest is decided at run time.
#include "attention/attention_fwd_kernel.cuh"
#include "attention/attention_launch.cuh"

namespace vitfast {

template <typename T, bool kF16Acc, bool kExtras>
void launch_fwd_typed(const AttnFwdParams& p, cudaStream_t stream) {
  dispatch_head_dim(p.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const int m_blocks = (p.N + FwdConfig::kBlockM - 1) / FwdConfig::kBlockM;
    launch_sliced(attention_fwd_kernel<T, D, kF16Acc, kExtras>, p, m_blocks, FwdConfig::kThreads,
                  fwd_smem_bytes<D>(), stream);
  });
}

template <typename T, bool kF16Acc>
void launch_fwd_extras(const AttnFwdParams& p, cudaStream_t stream) {
  // NaN and scales <= 0 take the general path: the plain one takes its row maxima over raw q kᵀ.
  const bool extras = p.bias != nullptr || p.logits != nullptr || !(p.scale > 0.f);
  if (extras) return launch_fwd_typed<T, kF16Acc, true>(p, stream);
  return launch_fwd_typed<T, kF16Acc, false>(p, stream);
}

void launch_attention_fwd(const AttnFwdParams& p, bool is_bf16, bool fp16_accumulate, cudaStream_t stream) {
  if (is_bf16) return launch_fwd_extras<__nv_bfloat16, false>(p, stream);
  if (fp16_accumulate) return launch_fwd_extras<__half, true>(p, stream);
  return launch_fwd_extras<__half, false>(p, stream);
}

}  // namespace vitfast
