// fp8_linear's Hopper kernels without the residual: the qkv product (no activation, into bf16) and fc1
// (exact or tanh GELU into e4m3, fc2's input), each configuration sm90_config.h builds for its kind. Any
// other epilogue (GELU into bf16, none into e4m3) is not built: the op's composite runs it.
#include "gemm/sm90/fp8_gemm_sm90.cuh"

namespace vitfast::gemm::sm90 {

int fp8_linear(const GemmParams& p, cudaStream_t stream) {
  if (!p.out_fp8 && p.epilogue == kNone) return run_fp8<Sm90Kind::kFp8Act, kNone>(p, stream);
  if (p.out_fp8 && p.epilogue == kGeluErf) return run_fp8<Sm90Kind::kFp8ActE4m3, kGeluErf>(p, stream);
  if (p.out_fp8 && p.epilogue == kGeluTanh) return run_fp8<Sm90Kind::kFp8ActE4m3Tanh, kGeluTanh>(p, stream);
  return kEpilogueNotBuilt;
}

}  // namespace vitfast::gemm::sm90
