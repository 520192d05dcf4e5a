#pragma once
// lp_matmul's argument checks, shared by its CPU and CUDA kernels.
#include <string>

#include "gemm/gemm.h"

namespace vitfast::gemm {

inline int parse_epilogue(const char* op, const std::string& e) {
  if (e == "none") return kNone;
  if (e == "gelu") return kGeluErf;
  if (e == "gelu_tanh") return kGeluTanh;
  if (e == "residual") return kResidual;
  TORCH_CHECK(false, op, ": epilogue must be 'none', 'gelu', 'gelu_tanh' or 'residual', got '", e, "'");
}

// Returns (M, N, K, epilogue).
inline std::tuple<int64_t, int64_t, int64_t, int> check_lp_matmul(const at::Tensor& x, const at::Tensor& weight,
                                                                 const std::optional<at::Tensor>& bias,
                                                                 const std::string& epilogue,
                                                                 const std::optional<at::Tensor>& residual,
                                                                 bool accumulate_fp16, at::ScalarType out_dtype) {
  TORCH_CHECK(x.scalar_type() == at::kHalf, "lp_matmul: x must be float16, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kHalf, "lp_matmul: weight must be float16, got ", weight.scalar_type());
  const auto [M, N, K] = check_linear("lp_matmul", x, weight, bias, /*same_dtype=*/false);
  TORCH_CHECK(K % 8 == 0, "lp_matmul: the inner dimension K (", K, ") must be a multiple of 8");
  TORCH_CHECK(!bias.has_value() || at::isFloatingType(bias->scalar_type()), "lp_matmul: bias must be floating point");
  TORCH_CHECK(out_dtype == at::kHalf || out_dtype == at::kFloat, "lp_matmul: out_dtype must be float16 or float32, got ",
              out_dtype);
  const int epi = parse_epilogue("lp_matmul", epilogue);
  if (epi == kResidual) {
    TORCH_CHECK(residual.has_value(), "lp_matmul: epilogue 'residual' needs a residual tensor");
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(out_shape(x, N)), "lp_matmul: residual must have the output's shape ",
                at::IntArrayRef(out_shape(x, N)), ", got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == out_dtype, "lp_matmul: residual must have out_dtype ", out_dtype, ", got ",
                residual->scalar_type());
    TORCH_CHECK(residual->device() == x.device(), "lp_matmul: residual must be on x's device");
  } else {
    TORCH_CHECK(!residual.has_value(), "lp_matmul: residual is given but epilogue is '", epilogue, "'");
  }
  (void)accumulate_fp16;
  return {M, N, K, epi};
}

// The CPU emulation (lp_matmul_cpu.cpp): the CPU kernel, and the GPU's where no GEMM kernel family may
// run there (kernel_gate.h).
at::Tensor lp_matmul_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         c10::string_view epilogue, const std::optional<at::Tensor>& residual, bool accumulate_fp16,
                         at::ScalarType out_dtype);

}  // namespace vitfast::gemm
