// fp8_linear's Hopper kernels without the residual: scales, bias, then GELU or nothing, into bf16 (the
// qkv product, for attention) or e4m3 (fc1 + GELU, fc2's input), each configuration sm90_config.h
// builds for kFp8Act and kFp8ActE4m3.
#include "gemm/sm90/fp8_gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int fp8_linear(const GemmParams& p, cudaStream_t stream) {
  return p.out_fp8 ? run_fp8<Sm90Kind::kFp8ActE4m3>(p, stream) : run_fp8<Sm90Kind::kFp8Act>(p, stream);
}

}  // namespace vitfast::gemm::sm90
