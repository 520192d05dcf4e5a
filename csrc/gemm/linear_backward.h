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

}  // namespace vitfast
