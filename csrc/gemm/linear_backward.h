#pragma once
// The gradients of out = x @ weight.T + bias by ATen's matrix products, for the fused linears' backward
// (linear_gelu_autograd.cpp, linear_residual_autograd.cpp); dout has out's shape (..., N).
#include <ATen/ATen.h>

#include <tuple>

namespace vitfast {

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const at::Tensor& dout, const at::Tensor& x,
                                                                      const at::Tensor& weight, bool bias_needed) {
  const int64_t N = weight.size(0), K = weight.size(1);
  const at::Tensor d2 = dout.reshape({-1, N});
  return {d2.mm(weight).reshape(x.sizes()), d2.t().mm(x.reshape({-1, K})), bias_needed ? d2.sum(0) : at::Tensor()};
}

// linear_gelu's gradient through GELU, and the bias gradient: (dout * GELU'(pre), its sum over rows or
// an empty tensor): gelu_grad_bias's checks and its ATen composite (the CPU kernel, and the GPU's where
// linear_gelu_backward_kernels.cu may not run).
inline void gelu_grad_bias_check(const at::Tensor& dout, const at::Tensor& pre, c10::string_view approximate) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh", "gelu_grad_bias: approximate must be 'none' or 'tanh', got '",
              approximate, "'");
  TORCH_CHECK(dout.sizes() == pre.sizes() && dout.dim() >= 1, "gelu_grad_bias: dout must have pre's shape ", pre.sizes(),
              ", got ", dout.sizes());
  TORCH_CHECK(dout.scalar_type() == pre.scalar_type() && at::isFloatingType(pre.scalar_type()),
              "gelu_grad_bias: dout and pre must be of one floating dtype, got ", dout.scalar_type(), " and ",
              pre.scalar_type());
  TORCH_CHECK(dout.device() == pre.device(), "gelu_grad_bias: dout and pre must be on one device");
}

inline std::tuple<at::Tensor, at::Tensor> gelu_grad_bias_aten(const at::Tensor& dout, const at::Tensor& pre,
                                                              c10::string_view approximate, bool bias_grad) {
  const at::Tensor dpre = at::gelu_backward(dout, pre, approximate);
  return {dpre, bias_grad ? dpre.reshape({-1, pre.size(-1)}).sum(0) : pre.new_empty({0})};
}

}  // namespace vitfast
