#pragma once
// Argument checks shared by the CPU and CUDA layer_norm kernels. Shapes: x (..., D) and residual the
// same; weight, bias (D) in x's dtype or float32; mean, rstd (rows) float32.
#include <ATen/ATen.h>

#include <tuple>

namespace vitfast {

inline int64_t layer_norm_check(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                const at::Tensor& weight, const at::Tensor& bias) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
              "layer_norm: x must be float32, float16 or bfloat16, got ", dt);
  TORCH_CHECK(x.dim() >= 1, "layer_norm: x must have at least one dimension");
  const int64_t D = x.size(-1);
  TORCH_CHECK(D > 0 && D % 8 == 0, "layer_norm: x's last dimension (hidden size) must be a positive multiple of 8, got ", D);
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes(), "layer_norm: residual must have x's shape ", x.sizes(), ", got ",
                residual->sizes());
    TORCH_CHECK(residual->scalar_type() == dt, "layer_norm: residual must have x's dtype ", dt, ", got ",
                residual->scalar_type());
    TORCH_CHECK(residual->device() == x.device(), "layer_norm: residual must be on x's device");
  }
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"weight", weight}, {"bias", bias}}) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == D, "layer_norm: ", name, " must have shape (", D, "), got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == dt || t.scalar_type() == at::kFloat, "layer_norm: ", name,
                " must have x's dtype or float32, got ", t.scalar_type());
    TORCH_CHECK(t.device() == x.device(), "layer_norm: ", name, " must be on x's device");
  }
  return D;
}

// LayerNorm of the rows of s (rows, D) in float32: (y, mean, rstd), the arithmetic of the CPU kernel
// (the mean, then the mean of the squared centred values, rsqrt(var + eps)) in ATen's ops.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_rows_fp32(const at::Tensor& s, const at::Tensor& weight,
                                                                         const at::Tensor& bias, double eps) {
  const at::Tensor f = s.to(at::kFloat);
  const at::Tensor mean = f.mean(1);
  const at::Tensor var = (f - mean.unsqueeze(1)).square().mean(1);
  const at::Tensor rstd = (var + eps).rsqrt();
  const at::Tensor y = (f - mean.unsqueeze(1)) * rstd.unsqueeze(1) * weight.to(at::kFloat) + bias.to(at::kFloat);
  return {y, mean, rstd};
}

inline void layer_norm_backward_check(const at::Tensor& dout, const std::optional<at::Tensor>& dsum, const at::Tensor& x,
                                      const at::Tensor& weight, const at::Tensor& mean, const at::Tensor& rstd) {
  TORCH_CHECK(dout.sizes() == x.sizes() && dout.scalar_type() == x.scalar_type(),
              "layer_norm_backward: dout must have x's shape and dtype");
  if (dsum.has_value()) {
    TORCH_CHECK(dsum->sizes() == x.sizes() && dsum->scalar_type() == x.scalar_type(),
                "layer_norm_backward: dsum must have x's shape and dtype");
  }
  const int64_t rows = x.numel() / x.size(-1);
  TORCH_CHECK(mean.scalar_type() == at::kFloat && mean.numel() == rows, "layer_norm_backward: mean must be float32 with ",
              rows, " elements");
  TORCH_CHECK(rstd.scalar_type() == at::kFloat && rstd.numel() == rows, "layer_norm_backward: rstd must be float32 with ",
              rows, " elements");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "layer_norm_backward: weight must have shape (",
              x.size(-1), ")");
}

// The ATen composites (layer_norm_cpu.cpp): the CPU kernels, and the GPU's where kernel_gate.h refuses
// the CUDA ones.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_norm_aten(const at::Tensor& x,
                                                                          const std::optional<at::Tensor>& residual,
                                                                          const at::Tensor& weight,
                                                                          const at::Tensor& bias, double eps, bool stats);
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward_aten(const at::Tensor& dout,
                                                                       const std::optional<at::Tensor>& dsum,
                                                                       const at::Tensor& x, const at::Tensor& weight,
                                                                       const at::Tensor& mean, const at::Tensor& rstd);

}  // namespace vitfast
