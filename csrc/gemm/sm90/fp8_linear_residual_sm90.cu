// fp8_linear's Hopper kernels with the residual: scales, bias and the bf16 residual stream added in
// fp32, one rounding into bf16 (the projection and fc2), each configuration built for kFp8Residual.
#include "gemm/sm90/fp8_gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int fp8_linear_residual(const GemmParams& p, cudaStream_t stream) {
  return run_fp8<Sm90Kind::kFp8Residual, kResidual>(p, stream);
}

}  // namespace vitfast::gemm::sm90
