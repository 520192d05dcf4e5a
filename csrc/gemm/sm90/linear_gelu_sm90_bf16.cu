// linear_gelu's Hopper kernels with bf16 operands and fp32 accumulators: every configuration
// sm90_config.h builds for kAct (GELU, or none) and kActAux (GELU with the stored pre-activation).
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_gelu_bf16(const GemmParams& p, cudaStream_t stream) {
  return p.pre ? run<cutlass::bfloat16_t, float, Sm90Kind::kActAux>(p, stream) : run<cutlass::bfloat16_t, float, Sm90Kind::kAct>(p, stream);
}

}  // namespace vitfast::gemm::sm90
