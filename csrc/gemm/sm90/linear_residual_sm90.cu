// linear_residual's Hopper kernels (and lp_matmul FP16_32's "residual" epilogue): bf16 and fp16
// operands, fp32 accumulators, the residual read by the epilogue in the operands' dtype or float32.
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_residual(const GemmParams& p, bool bf16, cudaStream_t stream) {
  if (p.out_f32) {
    return bf16 ? run<cutlass::bfloat16_t, float, Fusion::kResidual, float>(p, stream)
                : run<cutlass::half_t, float, Fusion::kResidual, float>(p, stream);
  }
  return bf16 ? run<cutlass::bfloat16_t, float, Fusion::kResidual>(p, stream)
              : run<cutlass::half_t, float, Fusion::kResidual>(p, stream);
}

}  // namespace vitfast::gemm::sm90
