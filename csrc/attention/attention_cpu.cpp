// The ATen composite of vitfast::attention_fwd / attention_bwd: the CPU kernel for every dtype, and
// the CUDA path for fp32/fp64 (the fused kernels take fp16/bf16). Arithmetic in fp32 (fp64 for fp64
// inputs); outputs are rounded once, to the input dtype.
//
// fp16_accumulate (FP16_16, fp16 inputs only) emulates what the tensor cores' fp16 accumulators do,
// with this exact meaning: in each of the two products (q kᵀ and p v) the reduction runs in slices
// of 16 (one mma.m16n8k16 step); each slice is summed in fp32 and added to an fp16 running sum,
// rounding to nearest even once per slice. The softmax's exponentials exp(s - rowmax) are rounded
// to fp16 before the second product (as the kernel feeds them to the tensor cores); the row sums,
// the scale, the bias and the final division stay fp32. The hardware's order of additions inside
// a slice differs, so CPU and CUDA agree to within rounding, not bit for bit. The backward rebuilds
// the probabilities with the same fp16-accumulated q kᵀ and accumulates its own products in fp32.
#include <torch/library.h>

#include "attention/attention.h"

namespace vitfast {
namespace {

at::ScalarType compute_type(const at::Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// a (..., M, K) @ b (..., K, N) with an fp16 accumulator, per the semantics above; returns fp32.
at::Tensor matmul_fp16_accumulate(const at::Tensor& a, const at::Tensor& b) {
  const int64_t K = a.size(-1);
  at::Tensor acc;
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t w = std::min<int64_t>(16, K - k0);
    at::Tensor part = at::matmul(a.narrow(-1, k0, w).to(at::kFloat), b.narrow(-2, k0, w).to(at::kFloat));
    acc = (acc.defined() ? acc.to(at::kFloat) + part : part).to(at::kHalf);
  }
  return acc.to(at::kFloat);
}

// Logits s = q kᵀ · scale + bias in the compute type.
at::Tensor logits_of(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& bias, double scale,
                     bool fp16_accumulate) {
  const auto ct = compute_type(q);
  at::Tensor s = fp16_accumulate ? matmul_fp16_accumulate(q, k.transpose(-2, -1))
                                 : at::matmul(q.to(ct), k.to(ct).transpose(-2, -1));
  s = s * scale;
  if (bias.has_value() && bias->defined()) s = s + bias->to(ct);
  return s;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_fwd_aten(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  double scale, bool return_logits,
                                                                  bool fp16_accumulate, bool out_bnhd,
                                                                  bool with_lse) {
  check_attention_inputs(q, k, v, bias);
  TORCH_CHECK(!fp16_accumulate || q.scalar_type() == at::kHalf,
              "accumulate='fp16' needs float16 q, k, v, got ", q.scalar_type());
  const at::Tensor s = logits_of(q, k, bias, scale, fp16_accumulate);
  // A row whose logits are all -inf has max -inf: subtract 0 instead, so it yields 0/0 = NaN like
  // the eager softmax, not exp(nan) garbage in the lse.
  at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
  m = at::where(at::isinf(m) & (m < 0), at::zeros_like(m), m);
  const at::Tensor e = (s - m).exp();
  const at::Tensor l = e.sum(-1, /*keepdim=*/true);
  at::Tensor out = fp16_accumulate ? matmul_fp16_accumulate(e.to(at::kHalf), v) : at::matmul(e, v.to(e.scalar_type()));
  out = (out / l).to(q.scalar_type());
  out = out_bnhd ? out.transpose(1, 2).contiguous() : out.contiguous();
  at::Tensor lse = with_lse ? (m + l.log()).squeeze(-1).contiguous() : at::empty({0}, m.options());
  at::Tensor logits = return_logits ? s.to(q.scalar_type()).contiguous() : at::empty({0}, q.options());
  return {out, lse, logits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_bwd_aten(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_logits, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& bias, const at::Tensor& out,
    const at::Tensor& lse, double scale, bool fp16_accumulate, bool bias_grad) {
  check_attention_bwd_inputs(grad_out, grad_logits, q, k, v, bias, out, lse, fp16_accumulate, bias_grad);
  const auto ct = compute_type(q);
  // The probabilities rebuilt from the logits as the forward computed them (so they match its lse);
  // every other product accumulates in fp32 whatever the forward used.
  const at::Tensor p = (logits_of(q, k, bias, scale, fp16_accumulate) - lse.to(ct).unsqueeze(-1)).exp();
  const at::Tensor dout = grad_out.to(ct);
  const at::Tensor dv = at::matmul(p.transpose(-2, -1), dout);
  const at::Tensor dp = at::matmul(dout, v.to(ct).transpose(-2, -1));
  at::Tensor ds = p * (dp - (p * dp).sum(-1, /*keepdim=*/true));
  if (grad_logits.has_value() && grad_logits->defined()) ds = ds + grad_logits->to(ct);
  const at::Tensor dq = at::matmul(ds, k.to(ct)) * scale;
  const at::Tensor dk = at::matmul(ds.transpose(-2, -1), q.to(ct)) * scale;
  at::Tensor dbias = bias_grad ? ds.sum_to_size(bias->sizes()).to(q.scalar_type()).contiguous()
                               : at::empty({0}, q.options());
  const auto dt = q.scalar_type();
  return {dq.to(dt).contiguous(), dk.to(dt).contiguous(), dv.to(dt).contiguous(), dbias};
}

}  // namespace vitfast

TORCH_LIBRARY_IMPL(vitfast, CPU, m) {
  m.impl("attention_fwd", &vitfast::attention_fwd_aten);
  m.impl("attention_bwd", &vitfast::attention_bwd_aten);
}
