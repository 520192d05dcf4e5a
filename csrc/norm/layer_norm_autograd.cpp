// layer_norm's gradient, registered for the Autograd key in C++: a call records its node with no Python
// in the way. torch.library's Python wrapper cost ~70 us a forward and ~90 us a backward on an H200's
// host, more than ViT-Ti's kernels save (benchmarks/results/profile_vit_tiny_h200.md). The device
// kernels below this key: layer_norm_cpu.cpp, layer_norm_cuda.cpp.
#include <torch/autograd.h>
#include <torch/library.h>

namespace vitfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Forward = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Backward = std::tuple<Tensor, Tensor, Tensor>;

Forward layer_norm_op(const Tensor& x, const std::optional<Tensor>& residual, const Tensor& weight,
                      const Tensor& bias, double eps, bool stats) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::layer_norm", "")
      .typed<Forward(const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&, double, bool)>();
  return op.call(x, residual, weight, bias, eps, stats);
}

Backward layer_norm_backward_op(const Tensor& dout, const std::optional<Tensor>& dsum, const Tensor& x,
                                const Tensor& weight, const Tensor& mean, const Tensor& rstd) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("vitfast::layer_norm_backward", "")
      .typed<Backward(const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                      const Tensor&)>();
  return op.call(dout, dsum, x, weight, mean, rstd);
}

struct LayerNorm : public torch::autograd::Function<LayerNorm> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const std::optional<Tensor>& residual,
                               const Tensor& weight, const Tensor& bias, double eps, bool stats) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, sum, mean, rstd] = layer_norm_op(x, residual, weight, bias, eps, stats);
    const bool has_residual = residual.has_value();
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["has_residual"] = has_residual;
    ctx->saved_data["stats"] = stats;
    ctx->saved_data["bias_dtype"] = bias.scalar_type();
    ctx->save_for_backward({has_residual ? sum : x, weight, mean, rstd});  // the normalised input, and stats
    ctx->mark_non_differentiable({mean, rstd});
    return {out, sum, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &s = saved[0], &weight = saved[1];
    Tensor mean = saved[2], rstd = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool has_residual = ctx->saved_data["has_residual"].toBool();
    if (!ctx->saved_data["stats"].toBool()) {  // run with stats=False (opcheck does): recompute them
      auto [_out, _sum, m, r] = layer_norm_op(s, std::nullopt, weight, at::zeros_like(weight), eps, true);
      mean = m;
      rstd = r;
    }
    const Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(s);
    std::optional<Tensor> dsum;
    if (has_residual && grads[1].defined()) dsum = grads[1];
    auto [dx, dweight, dbias] = layer_norm_backward_op(dout, dsum, s, weight, mean, rstd);
    return {dx, has_residual ? dx : Tensor(), dweight, dbias.to(ctx->saved_data["bias_dtype"].toScalarType()),
            Tensor(), Tensor()};
  }
};

Forward layer_norm_autograd(const Tensor& x, const std::optional<Tensor>& residual, const Tensor& weight,
                            const Tensor& bias, double eps, bool stats) {
  auto r = LayerNorm::apply(x, residual, weight, bias, eps, stats);
  return {r[0], r[1], r[2], r[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, Autograd, m) { m.impl("layer_norm", &layer_norm_autograd); }

}  // namespace vitfast
