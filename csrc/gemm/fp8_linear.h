#pragma once
// fp8_linear's argument checks and its ATen composite, shared by the CPU kernel and the CUDA one (which
// runs it where no FP8 kernel takes the case). The composite is the definition the Hopper kernels are
// tested against: the e4m3 values multiplied and summed in fp32 (exact products, fp32 sums in ATen's
// order), then the epilogue's steps in fp32:
//   v = acc * (scale_b[n] * scale_a) + bias[n]     (x's scale folded into the weight's, as the kernels do)
//   activation "gelu" / "gelu_tanh" / "none": out = Out(act(v) * (1 / out_scale)) (e4m3: rounded to
//     nearest even and saturated, scaled_cast's rounding; bf16: scale 1), amax = max |act(v)|
//   a residual: out = bf16(v + residual), amax = max |v + residual|
// The kernels differ from it in the order of the sum and by fusing acc * scale + bias into one rounding;
// an out_scale that is a power of two makes * (1 / out_scale) the exact division.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "gemm/gemm.h"
#include "quant/scaled_cast_op.h"

namespace vitfast::gemm {

struct Fp8Linear {
  int64_t M = 0, N = 0, K = 0;
  int epilogue = kNone;  // kNone, kGeluErf, kGeluTanh, kResidual
  bool out_fp8 = false;
};

inline Sm90Kind fp8_kind(const Fp8Linear& f) {
  return f.epilogue == kResidual ? Sm90Kind::kFp8Residual
         : !f.out_fp8            ? Sm90Kind::kFp8Act
         : f.epilogue == kGeluTanh ? Sm90Kind::kFp8ActE4m3Tanh
                                   : Sm90Kind::kFp8ActE4m3;
}

// Whether the Hopper kernels are built for f's epilogue (fp8_gemm_sm90.cuh): the FP8 chain's three, qkv
// (none into bf16), fc1 (GELU into e4m3) and the residual; the composite runs any other.
inline bool fp8_sm90_epilogue_built(const Fp8Linear& f) {
  return f.epilogue == kResidual || (f.out_fp8 ? f.epilogue == kGeluErf || f.epilogue == kGeluTanh
                                               : f.epilogue == kNone);
}

inline void check_scalar_f32(const char* what, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.numel() == 1, "fp8_linear: ", what,
              " must be a float32 tensor of one value, got ", t.scalar_type(), " of ", t.numel());
  TORCH_CHECK(t.device() == x.device(), "fp8_linear: ", what, " must be on x's device");
}

inline Fp8Linear check_fp8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale_a,
                                  const at::Tensor& scale_b, const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& residual, c10::string_view activation,
                                  at::ScalarType out_dtype, const std::optional<at::Tensor>& out_scale) {
  TORCH_CHECK(x.scalar_type() == at::kFloat8_e4m3fn, "fp8_linear: x must be float8_e4m3fn, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kFloat8_e4m3fn, "fp8_linear: weight must be float8_e4m3fn, got ",
              weight.scalar_type());
  const auto [M, N, K] = check_linear("fp8_linear", x, weight, bias, /*same_dtype=*/false);
  TORCH_CHECK(!bias.has_value() || bias->scalar_type() == at::kFloat || bias->scalar_type() == at::kBFloat16,
              "fp8_linear: bias must be float32 or bfloat16, got ", bias->scalar_type());
  check_scalar_f32("scale_a", scale_a, x);
  TORCH_CHECK(scale_b.scalar_type() == at::kFloat && scale_b.dim() == 1 && scale_b.size(0) == N,
              "fp8_linear: scale_b must be a float32 tensor of shape (", N, "), got ", scale_b.scalar_type(), " ",
              scale_b.sizes());
  TORCH_CHECK(scale_b.device() == x.device(), "fp8_linear: scale_b must be on x's device");
  Fp8Linear f{M, N, K, kNone, out_dtype == at::kFloat8_e4m3fn};
  TORCH_CHECK(out_dtype == at::kBFloat16 || f.out_fp8, "fp8_linear: out_dtype must be bfloat16 or float8_e4m3fn, got ",
              out_dtype);
  if (activation == "gelu") f.epilogue = kGeluErf;
  else if (activation == "gelu_tanh") f.epilogue = kGeluTanh;
  else TORCH_CHECK(activation == "none", "fp8_linear: activation must be 'none', 'gelu' or 'gelu_tanh', got '",
                   activation, "'");
  if (residual.has_value()) {
    TORCH_CHECK(f.epilogue == kNone, "fp8_linear: a residual takes no activation (got '", activation, "')");
    TORCH_CHECK(!f.out_fp8, "fp8_linear: a residual's sum is written in bfloat16 (the residual stream), not ", out_dtype);
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(out_shape(x, N)), "fp8_linear: residual must have the output's "
                "shape ", at::IntArrayRef(out_shape(x, N)), ", got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == at::kBFloat16, "fp8_linear: residual must be bfloat16, got ",
                residual->scalar_type());
    TORCH_CHECK(residual->device() == x.device(), "fp8_linear: residual must be on x's device");
    f.epilogue = kResidual;
  }
  TORCH_CHECK(f.out_fp8 == out_scale.has_value(), "fp8_linear: out_scale is ",
              f.out_fp8 ? "needed for an e4m3 output" : "only for an e4m3 output (out_dtype float8_e4m3fn)");
  if (out_scale.has_value()) check_scalar_f32("out_scale", *out_scale, x);
  return f;
}

// The composite: see the header's comment. Returns (out (..., N), amax (1 value, or 0 values when not asked)).
inline std::tuple<at::Tensor, at::Tensor> fp8_linear_aten(const at::Tensor& x, const at::Tensor& weight,
                                                         const at::Tensor& scale_a, const at::Tensor& scale_b,
                                                         const std::optional<at::Tensor>& bias,
                                                         const std::optional<at::Tensor>& residual,
                                                         const Fp8Linear& f, const std::optional<at::Tensor>& out_scale,
                                                         bool want_amax) {
  at::Tensor v = at::matmul(x.reshape({f.M, f.K}).to(at::kFloat), weight.to(at::kFloat).t());
  v = v.mul_(scale_b * scale_a.reshape({}));
  if (bias.has_value()) v = v.add_(bias->to(at::kFloat));
  if (f.epilogue == kGeluErf) v = at::gelu(v, "none");
  if (f.epilogue == kGeluTanh) v = at::gelu(v, "tanh");
  if (f.epilogue == kResidual) v = v.add_(residual->reshape({f.M, f.N}).to(at::kFloat));
  at::Tensor amax = !want_amax ? at::empty({0}, v.options())
                    : v.numel() ? v.abs().amax().reshape({1}) : at::zeros({1}, v.options());  // no rows: 0
  at::Tensor out;
  if (f.out_fp8) {
    // scaled_cast's rounding of v * (1 / out_scale), divided by one: the kernel's multiply, exactly.
    out = scaled_cast_op(v.mul_(at::reciprocal(out_scale->reshape({}))), at::ones({1}, v.options()),
                         at::kFloat8_e4m3fn);
  } else {
    out = v.to(at::kBFloat16);
  }
  return {out.reshape(out_shape(x, f.N)), amax};
}

}  // namespace vitfast::gemm
