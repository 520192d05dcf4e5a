// layer_norm on the GPU: the checks, allocations and streams around the kernels of
// layer_norm_kernels.cu and layer_norm_fixed.cuh (see there); their ATen composites (layer_norm_cpu.cpp)
// where kernel_gate.h says the kernels may not run on this GPU kind.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "dense.h"
#include "norm/layer_norm.h"
#include "norm/layer_norm_fp8.h"
#include "norm/layer_norm_kernels.h"
#include "kernel_gate_cuda.h"

namespace vitfast {
namespace {

NormDtype norm_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf ? NormDtype::kHalf : t.scalar_type() == at::kBFloat16 ? NormDtype::kBFloat16
                                                                                            : NormDtype::kFloat;
}

// gamma (and beta) as the kernels read them: a bf16 / fp16 model's own parameters where x shares their
// dtype and runs the fixed-width kernels (a float32 copy per call was two launches of a bf16 ViT's
// ~150 a forward), else float32 (a copy only for other dtypes: autocast's parameters are float32).
struct KernelParams {
  at::Tensor g, b;
  bool f32;
};
KernelParams kernel_params(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias) {
  const bool own = weight.scalar_type() == x.scalar_type() && (!bias || bias->scalar_type() == x.scalar_type()) &&
                   layer_norm_has_fixed_kernel(norm_dtype(x), static_cast<int>(x.size(-1)));
  auto as_read = [&](const at::Tensor& t) { return dense(own ? t : t.to(at::kFloat)); };
  return {as_read(weight), bias ? as_read(*bias) : at::Tensor(), !own};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_norm_cuda(const at::Tensor& x_in,
                                                                           const std::optional<at::Tensor>& residual_in,
                                                                           const at::Tensor& weight,
                                                                           const at::Tensor& bias, double eps,
                                                                           bool stats) {
  const int64_t D = layer_norm_check(x_in, residual_in, weight, bias);
  const c10::cuda::CUDAGuard guard(x_in.device());
  if (!kernel_allowed(family::kLayerNorm, x_in)) return layer_norm_aten(x_in, residual_in, weight, bias, eps, stats);
  const at::Tensor x = dense(x_in);
  const at::Tensor residual = residual_in.has_value() ? dense(*residual_in) : at::Tensor();
  const KernelParams p = kernel_params(x, weight, &bias);
  const int64_t rows = x.numel() / D;
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor sum = residual.defined() ? at::empty_like(x, at::MemoryFormat::Contiguous) : x.new_empty({0});
  // mean and rstd only for a backward to read
  at::Tensor mean = at::empty({stats ? rows : 0}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({stats ? rows : 0}, x.options().dtype(at::kFloat));
  if (rows == 0) return {out, sum, mean, rstd};
  C10_CUDA_CHECK(layer_norm_fwd_launch(norm_dtype(x), x.const_data_ptr(),
                                       residual.defined() ? residual.const_data_ptr() : nullptr,
                                       p.g.const_data_ptr(), p.b.const_data_ptr(), p.f32, out.data_ptr(),
                                       residual.defined() ? sum.data_ptr() : nullptr,
                                       stats ? mean.data_ptr<float>() : nullptr, stats ? rstd.data_ptr<float>() : nullptr,
                                       rows, static_cast<int>(D), static_cast<float>(eps),
                                       at::cuda::getCurrentCUDAStream()));
  return {out, sum, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_backward_cuda(const at::Tensor& dout_in,
                                                                        const std::optional<at::Tensor>& dsum_in,
                                                                        const at::Tensor& x_in, const at::Tensor& weight,
                                                                        const at::Tensor& mean, const at::Tensor& rstd) {
  layer_norm_backward_check(dout_in, dsum_in, x_in, weight, mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  if (!kernel_allowed(family::kLayerNorm, x_in)) return layer_norm_backward_aten(dout_in, dsum_in, x_in, weight, mean, rstd);
  const int64_t D = x_in.size(-1), rows = x_in.numel() / D;
  const at::Tensor dout = dense(dout_in), x = dense(x_in), m = mean.contiguous(), r = rstd.contiguous();
  const at::Tensor dsum = dsum_in.has_value() ? dense(*dsum_in) : at::Tensor();
  const KernelParams p = kernel_params(x, weight, nullptr);
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t splits = layer_norm_bwd_splits(norm_dtype(x), rows, static_cast<int>(D), dsum.defined());
  at::Tensor part = at::zeros({2, splits, D}, x.options().dtype(at::kFloat));
  if (rows > 0) {
    C10_CUDA_CHECK(layer_norm_bwd_launch(norm_dtype(x), dout.const_data_ptr(),
                                         dsum.defined() ? dsum.const_data_ptr() : nullptr, x.const_data_ptr(),
                                         p.g.const_data_ptr(), p.f32, m.const_data_ptr<float>(),
                                         r.const_data_ptr<float>(),
                                         dx.data_ptr(), part.data_ptr<float>(), rows, static_cast<int>(D),
                                         static_cast<int>(splits), at::cuda::getCurrentCUDAStream()));
  }
  const at::Tensor sums = part.sum(1);
  return {dx.view(x_in.sizes()), sums[0].to(weight.scalar_type()), sums[1].to(weight.scalar_type())};
}

at::Tensor layer_norm_fp8_cuda(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& bias,
                               const at::Tensor& scale, double eps) {
  const int64_t D = layer_norm_fp8_check(x_in, weight, bias, scale);
  const c10::cuda::CUDAGuard guard(x_in.device());
  if (!kernel_allowed(family::kLayerNormFp8, x_in)) return layer_norm_fp8_aten(x_in, weight, bias, scale, eps);
  if (!layer_norm_has_fixed_kernel(norm_dtype(x_in), static_cast<int>(D))) {
    TORCH_WARN_ONCE("vitfast: layer_norm_fp8's kernels take fp16 / bf16 x at the widths ", layer_norm_fixed_widths(),
                    "; ", x_in.scalar_type(), " at D=", D,
                    " runs its ATen composite (float32 LayerNorm, then scaled_cast)");
    return layer_norm_fp8_aten(x_in, weight, bias, scale, eps);
  }
  const at::Tensor x = dense(x_in);
  const KernelParams p = kernel_params(x, weight, &bias);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn));
  const int64_t rows = x.numel() / D;
  if (rows == 0) return out;
  C10_CUDA_CHECK(layer_norm_fp8_fwd_launch(norm_dtype(x), x.const_data_ptr(), p.g.const_data_ptr(),
                                           p.b.const_data_ptr(), p.f32, scale.contiguous().const_data_ptr<float>(),
                                           static_cast<uint8_t*>(out.data_ptr()), rows, static_cast<int>(D),
                                           static_cast<float>(eps), at::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) {
  m.impl("layer_norm", &layer_norm_cuda);
  m.impl("layer_norm_backward", &layer_norm_backward_cuda);
  m.impl("layer_norm_fp8", &layer_norm_fp8_cuda);
}

}  // namespace vitfast
