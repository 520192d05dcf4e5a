// linear_gelu's Hopper kernels with fp16 operands and fp32 accumulators (and lp_matmul FP16_32's
// "none" / "gelu" epilogues into fp16): every configuration sm90_config.h builds for kAct (GELU, or
// none) and kActAux (GELU with the stored pre-activation).
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_gelu_fp16(const GemmParams& p, cudaStream_t stream) {
  return p.pre ? run<cutlass::half_t, float, Sm90Kind::kActAux>(p, stream) : run<cutlass::half_t, float, Sm90Kind::kAct>(p, stream);
}

}  // namespace vitfast::gemm::sm90
