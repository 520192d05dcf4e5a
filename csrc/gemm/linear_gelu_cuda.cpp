// linear_gelu on the GPU: one tensor-core GEMM (fp32 accumulation) whose epilogue adds the bias,
// rounds the pre-activation to x's dtype (stored when the backward needs it) and applies GELU.
// gemm_path.h picks the kernel (sm90 on an H100/H200, else mma.sync) or ATen's linear + gelu.
#include <torch/library.h>

#include "gemm/linear_cuda.h"

namespace vitfast::gemm {
namespace {

std::tuple<at::Tensor, at::Tensor> linear_gelu_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                    const std::optional<at::Tensor>& bias, c10::string_view approximate,
                                                    bool save_pre, c10::string_view config) {
  const auto [M, N, K] = check_linear("linear_gelu", x, weight, bias);
  TORCH_CHECK(approximate == "none" || approximate == "tanh", "linear_gelu: approximate must be 'none' or 'tanh', got '",
              approximate, "'");
  const int sm90_config = sm90_config_arg("linear_gelu", config, sm90_gelu_kind(approximate == "tanh", save_pre));
  auto aten = [&]() -> std::tuple<at::Tensor, at::Tensor> {
    const at::Tensor pre = at::linear(x, weight, bias);
    return {at::gelu(pre, approximate), save_pre ? pre : x.new_empty({0})};
  };
  const GemmPath path = gemm_path_for(x, M, N, K, false, false, fused_gemm_enabled());
  if (path == GemmPath::kAten) return aten();
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor a = dense(x.reshape({M, K})), w = dense(weight);
  const at::Tensor b = bias.has_value() ? dense(*bias) : at::Tensor();  // x's dtype, read as is by the epilogue
  at::Tensor out = at::empty({M, N}, x.options());
  at::Tensor pre = save_pre ? at::empty({M, N}, x.options()) : x.new_empty({0});
  GemmParams p = linear_params(a, w, b, out, M, N, K);
  p.epilogue = approximate == "tanh" ? kGeluTanh : kGeluErf;
  p.round_pre = true;
  p.pre = save_pre ? pre.data_ptr() : nullptr;
  p.config = sm90_config;
  if (!launch_gemm(p, x.scalar_type(), false, path)) return aten();
  const auto shape = out_shape(x, N);
  return {out.view(shape), save_pre ? pre.view(shape) : pre};
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("linear_gelu", &linear_gelu_cuda); }

}  // namespace vitfast::gemm
