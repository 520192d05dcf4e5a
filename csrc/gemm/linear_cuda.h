#pragma once
// What linear_gelu, linear_residual, lp_matmul and fp8_linear share on the GPU: operands made GEMM-ready,
// and the launch of a Hopper kernel with its outcome reported.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "dense.h"
#include "gemm/gemm.h"
#ifdef VITFAST_WITH_SM90
#include "gemm/sm90/gemm_sm90.h"
#endif

namespace vitfast::gemm {

// VITFAST_FUSED_GEMM=0 (read once) sends linear_gelu / linear_residual to ATen's ops: the same op on
// cuBLAS plus separate elementwise kernels, to compare the two on a GPU without rebuilding.
inline bool fused_gemm_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("VITFAST_FUSED_GEMM");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

// bias: undefined, float32, or the operands' dtype (linear_gelu's and linear_residual's kernels read it as is).
inline GemmParams linear_params(const at::Tensor& a, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out,
                                int64_t M, int64_t N, int64_t K) {
  TORCH_CHECK(!bias.defined() || bias.scalar_type() == at::kFloat || bias.scalar_type() == a.scalar_type(),
              "vitfast: a GEMM's bias must be float32 or the operands' dtype, got ", bias.scalar_type());
  GemmParams p;
  p.a = a.data_ptr();
  p.b = w.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.bias_f32 = !bias.defined() || bias.scalar_type() == at::kFloat;
  p.out = out.data_ptr();
  p.M = M;
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  return p;
}

// An error still pending from earlier work is reported as such, not as the coming launch's.
inline void check_no_pending_error(const char* op) {
  const cudaError_t earlier = cudaGetLastError();
  TORCH_CHECK(earlier == cudaSuccess, "vitfast: a CUDA error from earlier work was pending when ", op, " was called: ",
              cudaGetErrorString(earlier));
}

#ifdef VITFAST_WITH_SM90
// kernel(p, stream), one of gemm_sm90.h's: null when it wrote the output, else why it refused the case
// (the caller warns once and runs its next path); a failed launch is an error. operand_bytes: for
// sm90_refusal's reason.
inline const char* launch_sm90_kernel(const GemmParams& p, int operand_bytes, const char* what,
                                      int (*kernel)(const GemmParams&, cudaStream_t)) {
  const int status = kernel(p, at::cuda::getCurrentCUDAStream());
  const char* config = kSm90ConfigNames[p.config];
  TORCH_CHECK(status != sm90::kLaunchFailed, "vitfast: CUTLASS's launch of the sm90 ", what, " (", config,
              ") failed at M=", p.M, ", N=", p.N, ", K=", p.K);
  TORCH_CHECK(status != sm90::kNotBuilt, "vitfast: no sm90 ", what, " is built in the configuration ", config,
              " for this epilogue (the op's wrapper checks this; please report it)");
  return status == sm90::kOk                  ? nullptr
         : status == sm90::kRefused           ? sm90_refusal(p, operand_bytes)
         : status == sm90::kEpilogueNotBuilt  ? "no sm90 kernel is built for this epilogue"
         : status == sm90::kBiasDtype         ? "the kernel reads its bias in another dtype"
         : status == sm90::kNeedsWorkspace    ? "CUTLASS asks for a workspace"
                                              : "CUTLASS's can_implement declined it";
}
#endif

}  // namespace vitfast::gemm
