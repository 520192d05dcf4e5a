// linear_gelu's Hopper kernels (and lp_matmul FP16_32's "none" / "gelu" epilogues): bf16 and fp16
// operands, fp32 accumulators, with and without the stored pre-activation.
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_gelu(const GemmParams& p, bool bf16, cudaStream_t stream) {
  if (bf16) {
    return p.pre ? run<cutlass::bfloat16_t, float, Fusion::kActAux>(p, stream)
                 : run<cutlass::bfloat16_t, float, Fusion::kAct>(p, stream);
  }
  return p.pre ? run<cutlass::half_t, float, Fusion::kActAux>(p, stream) : run<cutlass::half_t, float, Fusion::kAct>(p, stream);
}

}  // namespace vitfast::gemm::sm90
