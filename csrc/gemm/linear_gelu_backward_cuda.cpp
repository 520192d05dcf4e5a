// gelu_grad_bias on the GPU: linear_gelu's backward pass over the saved pre-activation in one kernel
// (linear_gelu_backward_kernels.cu): GELU's gradient and the bias gradient from one read of dout and
// pre, where ATen reads dout and pre for gelu_backward and then dpre again for its sum. The composite
// where the kernel may not run (kernel_gate.h: the gemm_mma family) or cannot take the tensors.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "dense.h"
#include "gemm/linear_backward.h"
#include "gemm/linear_gelu_backward.h"
#include "kernel_gate_cuda.h"

namespace vitfast::gemm {
namespace {

std::tuple<at::Tensor, at::Tensor> gelu_grad_bias_cuda(const at::Tensor& dout, const at::Tensor& pre,
                                                       c10::string_view approximate, bool bias_grad) {
  gelu_grad_bias_check(dout, pre, approximate);
  const auto type = pre.scalar_type();
  const int64_t N = pre.size(-1), M = N > 0 ? pre.numel() / N : 0;
  const bool takes = (type == at::kHalf || type == at::kBFloat16 || type == at::kFloat) &&
                     gelu_grad_refusal(M, N, static_cast<int>(pre.element_size())) == nullptr;
  if (!takes || !kernel_allowed(family::kGemmMma, pre)) return gelu_grad_bias_aten(dout, pre, approximate, bias_grad);
  const c10::cuda::CUDAGuard guard(pre.device());
  const at::Tensor dy = dense(dout), x = dense(pre);  // contiguous, 16-byte aligned
  at::Tensor dpre = at::empty(pre.sizes(), pre.options());
  at::Tensor partial = bias_grad ? at::empty({gelu_grad_row_blocks(M), N}, pre.options().dtype(at::kFloat))
                                 : at::Tensor();
  at::Tensor dbias = bias_grad ? at::empty({N}, pre.options()) : pre.new_empty({0});
  GeluGradParams p;
  p.dout = dy.data_ptr();
  p.pre = x.data_ptr();
  p.dpre = dpre.data_ptr();
  p.partial = bias_grad ? partial.data_ptr<float>() : nullptr;
  p.dbias = bias_grad ? dbias.data_ptr() : nullptr;
  p.M = M;
  p.N = static_cast<int>(N);
  p.dtype = type == at::kHalf ? GradDtype::kHalf : type == at::kBFloat16 ? GradDtype::kBFloat16 : GradDtype::kFloat;
  p.tanh = approximate == "tanh";
  C10_CUDA_CHECK(gelu_grad_bias(p, at::cuda::getCurrentCUDAStream()));
  return {dpre, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("gelu_grad_bias", &gelu_grad_bias_cuda); }

}  // namespace vitfast::gemm
