// linear_gelu's gradient, registered for the Autograd key in C++ (no Python per call; see
// layer_norm_autograd.cpp for why): GELU's gradient and the bias gradient in one pass over the saved
// pre-activation (gelu_grad_bias: linear_gelu_backward_*.cpp), then the linear's products. Device
// kernels below: linear_gelu_cpu.cpp, _cuda.cpp.
#include <torch/autograd.h>
#include <torch/library.h>

#include "gemm/linear_backward.h"

namespace vitfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Forward = std::tuple<Tensor, Tensor>;

std::tuple<Tensor, Tensor> gelu_grad_bias_op(const Tensor& dout, const Tensor& pre, c10::string_view approximate,
                                             bool bias_grad) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::gelu_grad_bias", "")
      .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, c10::string_view, bool)>();
  return op.call(dout, pre, approximate, bias_grad);
}

Forward linear_gelu_op(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                       c10::string_view approximate, bool save_pre, c10::string_view config) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::linear_gelu", "")
      .typed<Forward(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view, bool,
                     c10::string_view)>();
  return op.call(x, weight, bias, approximate, save_pre, config);
}

struct LinearGelu : public torch::autograd::Function<LinearGelu> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const std::optional<Tensor>& bias, c10::string_view approximate, bool save_pre,
                               c10::string_view config) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, pre] = linear_gelu_op(x, weight, bias, approximate, save_pre, config);
    ctx->saved_data["approximate"] = std::string(approximate);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["save_pre"] = save_pre;
    ctx->save_for_backward({x, weight, bias.value_or(Tensor()), pre});
    ctx->mark_non_differentiable({pre});
    return {out, pre};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &bias = saved[2];
    Tensor pre = saved[3];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    if (!ctx->saved_data["save_pre"].toBool())  // run without save_pre (opcheck does): recompute it
      pre = at::linear(x, weight, has_bias ? std::optional<Tensor>(bias) : std::nullopt);
    const Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(pre);
    auto [dpre, dbias] = gelu_grad_bias_op(dout, pre, ctx->saved_data["approximate"].toStringRef(), has_bias);
    auto [dx, dweight, unused] = linear_backward(dpre, x, weight, false);
    return {dx, dweight, has_bias ? dbias : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Forward linear_gelu_autograd(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                             c10::string_view approximate, bool save_pre, c10::string_view config) {
  auto r = LinearGelu::apply(x, weight, bias, approximate, save_pre, config);
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, Autograd, m) { m.impl("linear_gelu", &linear_gelu_autograd); }

}  // namespace vitfast
