// linear_residual's gradient, registered for the Autograd key in C++ (no Python per call; see
// layer_norm_autograd.cpp for why). Device kernels below: linear_residual_cpu.cpp, _cuda.cpp.
#include <torch/autograd.h>
#include <torch/library.h>

#include "gemm/linear_backward.h"

namespace vitfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Tensor linear_residual_op(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                          const Tensor& residual, c10::string_view config) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::linear_residual", "")
      .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&, c10::string_view)>();
  return op.call(x, weight, bias, residual, config);
}

struct LinearResidual : public torch::autograd::Function<LinearResidual> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const std::optional<Tensor>& bias, const Tensor& residual, c10::string_view config) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->save_for_backward({x, weight});
    return {linear_residual_op(x, weight, bias, residual, config)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1];
    const Tensor& dout = grads[0];  // in the residual's dtype, which may be float32 where x is 16-bit
    auto [dx, dweight, dbias] = linear_backward(dout.to(x.scalar_type()), x, weight,
                                                ctx->saved_data["has_bias"].toBool());
    return {dx, dweight, dbias, dout, Tensor()};
  }
};

Tensor linear_residual_autograd(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                                const Tensor& residual, c10::string_view config) {
  return LinearResidual::apply(x, weight, bias, residual, config)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, Autograd, m) { m.impl("linear_residual", &linear_residual_autograd); }

}  // namespace vitfast
