// linear_residual on the GPU: one tensor-core GEMM (fp32 accumulation) whose epilogue adds the bias
// and the residual in fp32 and rounds once, into the residual's dtype (x's, or float32). float32 inputs, or K % 8 != 0, run ATen's ops instead.
#include <torch/library.h>

#include "gemm/linear_cuda.h"

namespace vitfast::gemm {
namespace {

at::Tensor linear_residual_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const at::Tensor& residual) {
  const auto [M, N, K] = check_linear("linear_residual", x, weight, bias);
  const auto shape = out_shape(x, N);
  TORCH_CHECK(residual.sizes() == at::IntArrayRef(shape), "linear_residual: residual must have the output's shape ",
              at::IntArrayRef(shape), ", got ", residual.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type() || residual.scalar_type() == at::kFloat,
              "linear_residual: residual must have x's dtype ", x.scalar_type(), " or float32, got ", residual.scalar_type());
  TORCH_CHECK(residual.device() == x.device(), "linear_residual: residual must be on x's device");
  if (!fused_gemm_applies(x, K)) return at::linear(x, weight, bias).to(residual.scalar_type()).add_(residual);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor a = dense(x.reshape({M, K})), w = dense(weight), r = residual.reshape({M, N}).contiguous();
  const at::Tensor bf = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor out = at::empty({M, N}, residual.options());
  GemmParams p = linear_params(a, w, bf, out, M, N, K);
  p.epilogue = kResidual;
  p.out_f32 = residual.scalar_type() == at::kFloat;
  p.residual = r.data_ptr();
  launch_mma_gemm(p, x.scalar_type(), false);
  return out.view(shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("linear_residual", &linear_residual_cuda); }

}  // namespace vitfast::gemm
