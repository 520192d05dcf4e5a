// linear_gelu on the CPU: ATen's linear, then GELU of the pre-activation rounded to x's dtype
// (exactly F.gelu(F.linear(x, weight, bias))).
#include <torch/library.h>

#include "gemm/gemm.h"

namespace vitfast::gemm {
namespace {

std::tuple<at::Tensor, at::Tensor> linear_gelu_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const std::optional<at::Tensor>& bias, c10::string_view approximate,
                                                   bool save_pre, c10::string_view config) {
  check_linear("linear_gelu", x, weight, bias);
  sm90_config_arg("linear_gelu", config, sm90_gelu_kind(approximate == "tanh", save_pre));  // no tiles to choose here
  TORCH_CHECK(approximate == "none" || approximate == "tanh", "linear_gelu: approximate must be 'none' or 'tanh', got '",
              approximate, "'");
  const at::Tensor pre = at::linear(x, weight, bias);
  at::Tensor out = at::gelu(pre, approximate);
  return {out, save_pre ? pre : x.new_empty({0})};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("linear_gelu", &linear_gelu_cpu); }

}  // namespace vitfast::gemm
