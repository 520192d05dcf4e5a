// fp8_linear on the CPU: the ATen composite of fp8_linear.h (the emulation the Hopper kernels are held to).
#include <torch/library.h>

#include "gemm/fp8_linear.h"

namespace vitfast::gemm {
namespace {

std::tuple<at::Tensor, at::Tensor> fp8_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                  const at::Tensor& scale_a, const at::Tensor& scale_b,
                                                  const std::optional<at::Tensor>& bias,
                                                  const std::optional<at::Tensor>& residual,
                                                  c10::string_view activation, at::ScalarType out_dtype,
                                                  const std::optional<at::Tensor>& out_scale, bool amax,
                                                  c10::string_view config) {
  const Fp8Linear f = check_fp8_linear(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale);
  sm90_config_arg("fp8_linear", config, fp8_kind(f));  // no tiles to choose here
  return fp8_linear_aten(x, weight, scale_a, scale_b, bias, residual, f, out_scale, amax);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("fp8_linear", &fp8_linear_cpu); }

}  // namespace vitfast::gemm
