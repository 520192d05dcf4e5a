// Instantiations and launcher of the backward kernels: {fp16, bf16} x d in {32, 64, 80, 96, 128},
// plus fp16 rebuilding q kᵀ with fp16 accumulators (as that forward did): 15 kernels.
#include "attention/attention_bwd_kernel.cuh"
#include "attention/attention_launch.cuh"

namespace vitfast {

template <typename T, bool kF16Acc>
void launch_bwd_typed(const AttnBwdParams& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.N;
  const int64_t delta_blocks = (rows + 3) / 4;
  attention_bwd_delta_kernel<T><<<static_cast<unsigned>(delta_blocks), 128, 0, stream>>>(
      static_cast<const T*>(p.dout), p.dos, static_cast<const T*>(p.out), p.os, const_cast<float*>(p.delta), p.H, p.N,
      p.d, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  dispatch_head_dim(p.d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    const int n_blocks = (p.N + BwdConfig::kBlockN - 1) / BwdConfig::kBlockN;
    launch_sliced(attention_bwd_kernel<T, D, kF16Acc>, p, n_blocks, BwdConfig::kThreads, bwd_smem_bytes<D>(), stream);
  });
}

void launch_attention_bwd(const AttnBwdParams& p, bool is_bf16, cudaStream_t stream) {
  if (is_bf16) return launch_bwd_typed<__nv_bfloat16, false>(p, stream);
  if (p.fp16_accumulate) return launch_bwd_typed<__half, true>(p, stream);
  return launch_bwd_typed<__half, false>(p, stream);
}

}  // namespace vitfast
