// lp_matmul on Hopper: FP16_16 sums fp16 products in an fp16 accumulator by the wgmma instruction
// itself (HGMMA ... .F16) before the fp32 epilogue (+ bias, GELU or none, or + residual); FP16_32's
// float32 outputs (fp32 accumulators, + bias, GELU or none). FP16_32 into fp16 shares linear_gelu's
// and linear_residual's kernels, and its residual into float32 linear_residual's. One configuration
// (coop_128x128) each.
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int lp_matmul_fp16_accumulate(const GemmParams& p, cudaStream_t stream) {
  return p.epilogue == kResidual ? run<cutlass::half_t, cutlass::half_t, Sm90Kind::kFp16AccResidual>(p, stream)
                                 : run<cutlass::half_t, cutlass::half_t, Sm90Kind::kFp16AccAct>(p, stream);
}

int lp_matmul_fp32_output(const GemmParams& p, cudaStream_t stream) {
  return run<cutlass::half_t, float, Sm90Kind::kFp32Output, float>(p, stream);
}

}  // namespace vitfast::gemm::sm90
