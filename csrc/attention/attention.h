#pragma once
// Fused attention softmax(q kᵀ · scale + bias) v on (B, H, N, d): the argument checks and the
// entry points shared by the CPU file (ATen composite, every dtype) and the CUDA files (fused
// kernels for fp16/bf16, the ATen composite for fp32/fp64).
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace vitfast {

// Checks q, k, v, bias the way both devices need them; returns nothing, throws naming the argument.
inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const std::optional<at::Tensor>& bias) {
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat || dt == at::kDouble,
              "q must be a float16, bfloat16, float32 or float64 tensor, got ", dt);
  TORCH_CHECK(k.scalar_type() == dt, "k must have q's dtype ", dt, ", got ", k.scalar_type());
  TORCH_CHECK(v.scalar_type() == dt, "v must have q's dtype ", dt, ", got ", v.scalar_type());
  TORCH_CHECK(k.device() == q.device(), "k must be on q's device ", q.device(), ", got ", k.device());
  TORCH_CHECK(v.device() == q.device(), "v must be on q's device ", q.device(), ", got ", v.device());
  TORCH_CHECK(q.dim() == 4, "q must be 4-D (B, H, N, d), got ", q.dim(), "-D");
  TORCH_CHECK(k.dim() == 4, "k must be 4-D (B, H, N, d), got ", k.dim(), "-D");
  TORCH_CHECK(v.dim() == 4, "v must be 4-D (B, H, N, d), got ", v.dim(), "-D");
  TORCH_CHECK(k.sizes() == q.sizes(), "k must have q's shape ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK(v.sizes() == q.sizes(), "v must have q's shape ", q.sizes(), ", got ", v.sizes());
  TORCH_CHECK(q.size(2) >= 1, "q must have at least one token (N >= 1), got N = ", q.size(2));
  TORCH_CHECK(q.size(3) >= 1, "q must have a head dim d >= 1, got ", q.size(3));
  if (bias.has_value() && bias->defined()) {
    const at::Tensor& b = *bias;
    const int64_t n = q.size(2);
    TORCH_CHECK(b.scalar_type() == dt, "bias must have q's dtype ", dt, ", got ", b.scalar_type());
    TORCH_CHECK(b.device() == q.device(), "bias must be on q's device ", q.device(), ", got ", b.device());
    TORCH_CHECK(b.dim() == 4, "bias must be 4-D (B or 1, H or 1, N, N), got ", b.dim(), "-D");
    TORCH_CHECK((b.size(0) == 1 || b.size(0) == q.size(0)) && (b.size(1) == 1 || b.size(1) == q.size(1)) &&
                    b.size(2) == n && b.size(3) == n,
                "bias must have shape (", q.size(0), " or 1, ", q.size(1), " or 1, ", n, ", ", n, "), got ", b.sizes());
  }
}

// The ATen composite (attention_cpu.cpp): CPU for every dtype, CUDA for fp32/fp64. Computes in
// fp32 (fp64 for fp64 inputs). fp16_accumulate emulates fp16 accumulation (see the .cpp). out_bnhd:
// out comes back as (B, N, H, d), the layout the output projection reads as (B, N, H·d). with_lse
// false (no backward will run): lse comes back empty, and the Hopper kernels do not write it.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_fwd_aten(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  double scale, bool return_logits,
                                                                  bool fp16_accumulate, bool out_bnhd,
                                                                  bool with_lse);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_bwd_aten(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_logits, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& bias, const at::Tensor& out,
    const at::Tensor& lse, double scale, bool fp16_accumulate, bool bias_grad);

// Checks shared by both backward entry points (the forward's outputs handed back).
inline void check_attention_bwd_inputs(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_logits,
                                       const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& out,
                                       const at::Tensor& lse, bool fp16_accumulate, bool bias_grad) {
  check_attention_inputs(q, k, v, bias);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && grad_out.scalar_type() == q.scalar_type() &&
                  grad_out.device() == q.device(),
              "grad_out must match q in shape, dtype and device, got ", grad_out.sizes(), " ", grad_out.scalar_type());
  TORCH_CHECK(out.sizes() == q.sizes() && out.scalar_type() == q.scalar_type() && out.device() == q.device(),
              "out must match q in shape, dtype and device, got ", out.sizes(), " ", out.scalar_type());
  const auto lse_dt = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) && lse.size(2) == q.size(2) &&
                  lse.scalar_type() == lse_dt && lse.device() == q.device(),
              "lse must be a (B, H, N) ", lse_dt, " tensor on q's device, got ", lse.sizes(), " ", lse.scalar_type());
  if (grad_logits.has_value() && grad_logits->defined()) {
    const int64_t n = q.size(2);
    TORCH_CHECK(grad_logits->sizes() == at::IntArrayRef({q.size(0), q.size(1), n, n}) &&
                    grad_logits->scalar_type() == q.scalar_type() && grad_logits->device() == q.device(),
                "grad_logits must be (B, H, N, N) with q's dtype and device, got ", grad_logits->sizes(), " ",
                grad_logits->scalar_type());
  }
  TORCH_CHECK(!bias_grad || (bias.has_value() && bias->defined()), "bias_grad=True needs a bias");
  TORCH_CHECK(!fp16_accumulate || q.scalar_type() == at::kHalf,
              "accumulate='fp16' needs float16 q, k, v, got ", q.scalar_type());
}

}  // namespace vitfast
