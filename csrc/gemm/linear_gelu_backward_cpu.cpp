// gelu_grad_bias on the CPU: linear_backward.h's ATen composite (linear_gelu's backward, whose GPU pass
// is linear_gelu_backward_cuda.cpp).
#include <torch/library.h>

#include "gemm/linear_backward.h"

namespace vitfast {
namespace {

std::tuple<at::Tensor, at::Tensor> gelu_grad_bias_cpu(const at::Tensor& dout, const at::Tensor& pre,
                                                      c10::string_view approximate, bool bias_grad) {
  gelu_grad_bias_check(dout, pre, approximate);
  return gelu_grad_bias_aten(dout, pre, approximate, bias_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("gelu_grad_bias", &gelu_grad_bias_cpu); }

}  // namespace vitfast
