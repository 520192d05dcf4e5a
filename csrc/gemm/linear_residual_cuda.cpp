// linear_residual on the GPU: one tensor-core GEMM (fp32 accumulation) whose epilogue adds the bias
// and the residual in fp32 and rounds once, into the residual's dtype (x's, or float32). gemm_path.h picks the kernel or ATen's ops.
#include <torch/library.h>

#include "gemm/linear_cuda.h"

namespace vitfast::gemm {
namespace {

at::Tensor linear_residual_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const at::Tensor& residual, c10::string_view config) {
  const auto [M, N, K] = check_linear("linear_residual", x, weight, bias);
  const auto shape = out_shape(x, N);
  TORCH_CHECK(residual.sizes() == at::IntArrayRef(shape), "linear_residual: residual must have the output's shape ",
              at::IntArrayRef(shape), ", got ", residual.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type() || residual.scalar_type() == at::kFloat,
              "linear_residual: residual must have x's dtype ", x.scalar_type(), " or float32, got ", residual.scalar_type());
  TORCH_CHECK(residual.device() == x.device(), "linear_residual: residual must be on x's device");
  const bool out_f32 = residual.scalar_type() == at::kFloat;
  const int sm90_config =
      sm90_config_arg("linear_residual", config, out_f32 ? Sm90Kind::kResidualF32 : Sm90Kind::kResidual);
  auto aten = [&] { return at::linear(x, weight, bias).to(residual.scalar_type()).add_(residual); };
  const GemmPath path = gemm_path_for(x, M, N, K, false, out_f32, fused_gemm_enabled());
  if (path == GemmPath::kAten) return aten();
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor a = dense(x.reshape({M, K})), w = dense(weight), r = dense(residual.reshape({M, N}));
  const at::Tensor b = bias.has_value() ? dense(*bias) : at::Tensor();  // x's dtype, read as is by the epilogue
  at::Tensor out = at::empty({M, N}, residual.options());
  GemmParams p = linear_params(a, w, b, out, M, N, K);
  p.epilogue = kResidual;
  p.out_f32 = out_f32;
  p.residual = r.data_ptr();
  p.config = sm90_config;
  if (!launch_gemm(p, x.scalar_type(), false, path)) return aten();
  return out.view(shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("linear_residual", &linear_residual_cuda); }

}  // namespace vitfast::gemm
