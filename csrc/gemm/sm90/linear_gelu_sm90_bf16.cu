// linear_gelu's Hopper kernels with bf16 operands and fp32 accumulators: exact or tanh GELU, with or
// without the stored pre-activation, each configuration sm90_config.h builds for its kind.
#include "gemm/sm90/gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int linear_gelu_bf16(const GemmParams& p, cudaStream_t stream) {
  using T = cutlass::bfloat16_t;
  return p.pre ? run_act<T, float, Sm90Kind::kActAux, Sm90Kind::kActAuxTanh, false>(p, stream)
               : run_act<T, float, Sm90Kind::kAct, Sm90Kind::kActTanh, false>(p, stream);
}

}  // namespace vitfast::gemm::sm90
