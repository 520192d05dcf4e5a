// linear_residual's Hopper kernels with bf16 operands and fp32 accumulators: the residual read by the
// epilogue in the operands' dtype (kResidual) or float32 (kResidualF32), every configuration
// sm90_config.h builds for each.
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_residual_bf16(const GemmParams& p, cudaStream_t stream) {
  return p.out_f32 ? run<cutlass::bfloat16_t, float, Sm90Kind::kResidualF32, kResidual, float>(p, stream)
                   : run<cutlass::bfloat16_t, float, Sm90Kind::kResidual, kResidual>(p, stream);
}

}  // namespace vitfast::gemm::sm90
