// linear_residual on the CPU: ATen's linear plus the residual (F.linear(x, weight, bias) + residual);
// a float32 residual with 16-bit x (autocast's fp32 residual stream) gives a float32 sum.
#include <torch/library.h>

#include "gemm/gemm.h"

namespace vitfast::gemm {
namespace {

at::Tensor linear_residual_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               const at::Tensor& residual, c10::string_view config) {
  const auto [M, N, K] = check_linear("linear_residual", x, weight, bias);
  TORCH_CHECK(residual.sizes() == at::IntArrayRef(out_shape(x, N)), "linear_residual: residual must have the output's shape ",
              at::IntArrayRef(out_shape(x, N)), ", got ", residual.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type() || residual.scalar_type() == at::kFloat,
              "linear_residual: residual must have x's dtype ", x.scalar_type(), " or float32, got ", residual.scalar_type());
  sm90_config_arg("linear_residual", config,
                  residual.scalar_type() == at::kFloat ? Sm90Kind::kResidualF32 : Sm90Kind::kResidual);
  return at::linear(x, weight, bias).to(residual.scalar_type()).add_(residual);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("linear_residual", &linear_residual_cpu); }

}  // namespace vitfast::gemm
