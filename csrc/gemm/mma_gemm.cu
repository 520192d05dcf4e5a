// The mma.sync GEMM's three instantiations, compiled once for every op that uses them: fp16 operands
// with an fp16 (lp_matmul FP16_16) or fp32 accumulator, bf16 operands with fp32. No torch headers:
// gemm_cuda.cpp checks the arguments.
#include "gemm/mma_gemm.cuh"

namespace vitfast::gemm {

cudaError_t mma_gemm(const GemmParams& p, Operand operand, bool accumulate_fp16, cudaStream_t stream) {
  const dim3 grid((p.N + kBN - 1) / kBN, static_cast<unsigned>((p.M + kBM - 1) / kBM));
  if (operand == Operand::kHalf && accumulate_fp16) {
    mma_gemm_kernel<__half, true><<<grid, kThreads, 0, stream>>>(p);
  } else if (operand == Operand::kHalf) {
    mma_gemm_kernel<__half, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    mma_gemm_kernel<__nv_bfloat16, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace vitfast::gemm
