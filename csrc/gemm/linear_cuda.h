#pragma once
// What linear_gelu, linear_residual and lp_matmul share on the GPU: operands made GEMM-ready.
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <string>

#include "dense.h"
#include "gemm/gemm.h"

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

inline GemmParams linear_params(const at::Tensor& a, const at::Tensor& w, const at::Tensor& bias_f32, at::Tensor& out,
                                int64_t M, int64_t N, int64_t K) {
  GemmParams p;
  p.a = a.data_ptr();
  p.b = w.data_ptr();
  p.bias = bias_f32.defined() ? bias_f32.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.M = M;
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  return p;
}

}  // namespace vitfast::gemm
