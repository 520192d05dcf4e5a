// lp_matmul on Hopper: FP16_16 sums fp16 products in an fp16 accumulator by the wgmma instruction
// itself (HGMMA ... .F16) before the fp32 epilogue (+ bias, then nothing, exact GELU or + residual);
// FP16_32 sums them in fp32 into fp16 or float32 outputs (+ bias, then nothing or exact GELU; its
// residual runs linear_residual's kernels). One configuration (coop_128x128) each: the dispatch data
// takes cuBLAS for every lp_matmul shape it measured, so these serve the exact formats' direct calls.
// tanh GELU is not built here (kEpilogueNotBuilt: the mma.sync kernel runs it).
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int lp_matmul_fp16_accumulate(const GemmParams& p, cudaStream_t stream) {
  using T = cutlass::half_t;
  if (p.epilogue == kResidual) return run<T, T, Sm90Kind::kFp16AccResidual, kResidual>(p, stream);
  return run_act<T, T, Sm90Kind::kFp16AccAct, Sm90Kind::kFp16AccAct, true>(p, stream);
}

int lp_matmul_fp32_accumulate(const GemmParams& p, cudaStream_t stream) {
  return run_act<cutlass::half_t, float, Sm90Kind::kFp32AccAct, Sm90Kind::kFp32AccAct, true>(p, stream);
}

int lp_matmul_fp32_output(const GemmParams& p, cudaStream_t stream) {
  return run_act<cutlass::half_t, float, Sm90Kind::kFp32Output, Sm90Kind::kFp32Output, true, float>(p, stream);
}

}  // namespace vitfast::gemm::sm90
