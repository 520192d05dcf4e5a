// layer_norm on the CPU, and on a GPU where its kernels may not run (kernel_gate.h): the same arithmetic
// as the CUDA kernels (fp32 statistics, the residual sum rounded to x's dtype before it is normalised),
// written with ATen ops in float32.
#include <torch/library.h>

#include "norm/layer_norm.h"
#include "norm/layer_norm_fp8.h"

namespace vitfast {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_norm_aten(const at::Tensor& x,
                                                                          const std::optional<at::Tensor>& residual,
                                                                          const at::Tensor& weight,
                                                                          const at::Tensor& bias, double eps,
                                                                          bool stats) {
  const int64_t D = layer_norm_check(x, residual, weight, bias);
  const int64_t rows = x.numel() / D;
  at::Tensor sum = residual.has_value() ? at::add(x, *residual) : x.new_empty({0});
  const auto [y, mean, rstd] = layer_norm_rows_fp32((residual.has_value() ? sum : x).reshape({rows, D}), weight, bias, eps);
  if (!stats) return {y.to(x.scalar_type()).reshape(x.sizes()), sum, mean.new_empty({0}), rstd.new_empty({0})};
  return {y.to(x.scalar_type()).reshape(x.sizes()), sum, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward_aten(const at::Tensor& dout,
                                                                       const std::optional<at::Tensor>& dsum,
                                                                       const at::Tensor& x, const at::Tensor& weight,
                                                                       const at::Tensor& mean, const at::Tensor& rstd) {
  layer_norm_backward_check(dout, dsum, x, weight, mean, rstd);
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const at::Tensor dy = dout.reshape({rows, D}).to(at::kFloat);
  const at::Tensor xhat = (x.reshape({rows, D}).to(at::kFloat) - mean.unsqueeze(1)) * rstd.unsqueeze(1);
  const at::Tensor g = dy * weight.to(at::kFloat);
  const at::Tensor a = g.mean(1, true), b = (g * xhat).mean(1, true);
  at::Tensor dx = rstd.unsqueeze(1) * (g - a - xhat * b);
  if (dsum.has_value()) dx = dx + dsum->reshape({rows, D}).to(at::kFloat);
  return {dx.to(x.scalar_type()).reshape(x.sizes()), (dy * xhat).sum(0).to(weight.scalar_type()),
          dy.sum(0).to(weight.scalar_type())};
}

TORCH_LIBRARY_IMPL(vitfast, CPU, m) {
  m.impl("layer_norm", &layer_norm_aten);
  m.impl("layer_norm_backward", &layer_norm_backward_aten);
  m.impl("layer_norm_fp8", &layer_norm_fp8_aten);
}

}  // namespace vitfast
