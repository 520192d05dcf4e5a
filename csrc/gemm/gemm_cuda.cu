// The GEMM's three instantiations, compiled once for every op that uses them: fp16 operands with an
// fp16 (lp_matmul FP16_16) or fp32 accumulator, bf16 operands with an fp32 accumulator.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "gemm/mma_gemm.cuh"

namespace vitfast::gemm {

void launch_mma_gemm(const GemmParams& p, at::ScalarType operand, bool accumulate_fp16) {
  if (p.M == 0 || p.N == 0) return;
  TORCH_CHECK(p.K % 8 == 0, "mma_gemm: K (", p.K, ") must be a multiple of 8");
  const int64_t mtiles = (p.M + kBM - 1) / kBM;
  TORCH_CHECK(mtiles <= 65535, "mma_gemm: M (", p.M, ") exceeds ", 65535 * kBM, " rows");
  const dim3 grid((p.N + kBN - 1) / kBN, static_cast<unsigned>(mtiles));
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (operand == at::kHalf && accumulate_fp16) {
    mma_gemm_kernel<__half, true><<<grid, kThreads, 0, stream>>>(p);
  } else if (operand == at::kHalf) {
    mma_gemm_kernel<__half, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    TORCH_CHECK(operand == at::kBFloat16 && !accumulate_fp16, "mma_gemm: fp16 accumulation needs fp16 operands");
    mma_gemm_kernel<__nv_bfloat16, false><<<grid, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace vitfast::gemm
