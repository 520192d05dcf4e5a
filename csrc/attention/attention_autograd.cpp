// attention_fwd's gradient, registered for the Autograd key in C++ (no Python per call; see
// norm/layer_norm_autograd.cpp for why): attention_bwd from the saved inputs, output and log-sum-exp.
// Device kernels below: attention_cpu.cpp, attention_cuda.cpp.
#include <torch/autograd.h>
#include <torch/library.h>

namespace vitfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Forward = std::tuple<Tensor, Tensor, Tensor>;
using Backward = std::tuple<Tensor, Tensor, Tensor, Tensor>;

Forward attention_fwd_op(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& bias,
                         double scale, bool return_logits, bool fp16_accumulate, bool out_bnhd, bool with_lse) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::attention_fwd", "")
      .typed<Forward(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double, bool, bool,
                     bool, bool)>();
  return op.call(q, k, v, bias, scale, return_logits, fp16_accumulate, out_bnhd, with_lse);
}

Backward attention_bwd_op(const Tensor& grad_out, const std::optional<Tensor>& grad_logits, const Tensor& q,
                          const Tensor& k, const Tensor& v, const std::optional<Tensor>& bias, const Tensor& out,
                          const Tensor& lse, double scale, bool fp16_accumulate, bool bias_grad) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::attention_bwd", "")
      .typed<Backward(const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                      const std::optional<Tensor>&, const Tensor&, const Tensor&, double, bool, bool)>();
  return op.call(grad_out, grad_logits, q, k, v, bias, out, lse, scale, fp16_accumulate, bias_grad);
}

struct Attention : public torch::autograd::Function<Attention> {
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                               const std::optional<Tensor>& bias, double scale, bool return_logits,
                               bool fp16_accumulate, bool out_bnhd, bool with_lse) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, lse, logits] = attention_fwd_op(q, k, v, bias, scale, return_logits, fp16_accumulate, out_bnhd,
                                               with_lse);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["fp16_accumulate"] = fp16_accumulate;
    ctx->saved_data["out_bnhd"] = out_bnhd;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["with_lse"] = with_lse;
    ctx->saved_data["return_logits"] = return_logits;
    ctx->save_for_backward({q, k, v, bias.value_or(Tensor()), out, lse});
    ctx->mark_non_differentiable({lse});
    return {out, lse, logits};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &lse = saved[5];
    Tensor out = saved[4];
    TORCH_CHECK(ctx->saved_data["with_lse"].toBool(),
                "attention_fwd ran with with_lse=False, so its output has no gradient; call it with with_lse=True "
                "(attention() does when an input needs a gradient)");
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::optional<Tensor> bias = has_bias ? std::optional<Tensor>(saved[3]) : std::nullopt;
    const bool bias_grad = has_bias && ctx->needs_input_grad(3);  // q, k, v, bias: the bias's edge is 3
    Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros_like(out);
    if (ctx->saved_data["out_bnhd"].toBool()) {  // the backward reads both as (B, H, N, d) views
      out = out.transpose(1, 2);
      grad_out = grad_out.transpose(1, 2);
    }
    std::optional<Tensor> grad_logits;
    if (ctx->saved_data["return_logits"].toBool() && grads[2].defined()) grad_logits = grads[2];
    auto [dq, dk, dv, dbias] = attention_bwd_op(grad_out, grad_logits, q, k, v, bias, out, lse,
                                                ctx->saved_data["scale"].toDouble(),
                                                ctx->saved_data["fp16_accumulate"].toBool(), bias_grad);
    return {dq, dk, dv, bias_grad ? dbias : Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Forward attention_fwd_autograd(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& bias,
                               double scale, bool return_logits, bool fp16_accumulate, bool out_bnhd,
                               bool with_lse) {
  auto r = Attention::apply(q, k, v, bias, scale, return_logits, fp16_accumulate, out_bnhd, with_lse);
  return {r[0], r[1], r[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, Autograd, m) { m.impl("attention_fwd", &attention_fwd_autograd); }

}  // namespace vitfast
