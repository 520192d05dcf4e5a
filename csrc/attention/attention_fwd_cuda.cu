// Instantiations and launcher of the forward kernel: {fp16, bf16} x d in {32, 64, 80, 96, 128},
// plus fp16 with fp16 accumulators: 15 kernels; the rest is decided at run time.
#include "attention/attention_fwd_kernel.cuh"
#include "attention/attention_launch.cuh"

namespace vitfast {

template <typename T, bool kF16Acc>
void launch_fwd_typed(const AttnFwdParams& p, cudaStream_t stream) {
  dispatch_head_dim(p.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const int m_blocks = (p.N + FwdConfig::kBlockM - 1) / FwdConfig::kBlockM;
    launch_sliced(attention_fwd_kernel<T, D, kF16Acc>, p, m_blocks, FwdConfig::kThreads, fwd_smem_bytes<D>(), stream);
  });
}

void launch_attention_fwd(const AttnFwdParams& p, bool is_bf16, bool fp16_accumulate, cudaStream_t stream) {
  if (is_bf16) return launch_fwd_typed<__nv_bfloat16, false>(p, stream);
  if (fp16_accumulate) return launch_fwd_typed<__half, true>(p, stream);
  return launch_fwd_typed<__half, false>(p, stream);
}

}  // namespace vitfast
