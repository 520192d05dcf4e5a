// fp8_linear on the GPU: the Hopper kernels (csrc/gemm/sm90/fp8_gemm_sm90.cuh) where gemm_path.h's
// choose_fp8_path allows, else fp8_linear.h's composite, saying so once.
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include "gemm/fp8_linear.h"
#include "gemm/linear_cuda.h"
#include "kernel_gate_cuda.h"

namespace vitfast::gemm {
namespace {

// The sm90 kernel for p; false, after one warning, where it cannot take the case.
bool launch_fp8_sm90(const GemmParams& p) {
#ifdef VITFAST_WITH_SM90
  check_no_pending_error("fp8_linear");
  const char* why =
      launch_sm90_kernel(p, 1, "FP8 GEMM", p.epilogue == kResidual ? sm90::fp8_linear_residual : sm90::fp8_linear);
  if (why == nullptr) return true;
  TORCH_WARN_ONCE("vitfast: the sm90 FP8 GEMM cannot take M=", p.M, ", N=", p.N, ", K=", p.K, " (", why,
                  "); fp8_linear runs its ATen composite (fp32 products of the e4m3 values) for such cases");
  return false;
#else
  (void)p;
  return false;
#endif
}

std::tuple<at::Tensor, at::Tensor> fp8_linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                   const at::Tensor& scale_a, const at::Tensor& scale_b,
                                                   const std::optional<at::Tensor>& bias,
                                                   const std::optional<at::Tensor>& residual,
                                                   c10::string_view activation, at::ScalarType out_dtype,
                                                   const std::optional<at::Tensor>& out_scale, bool want_amax,
                                                   c10::string_view config) {
  const Fp8Linear f = check_fp8_linear(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale);
  const int sm90_config = sm90_config_arg("fp8_linear", config, fp8_kind(f));
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(x.device().index());
  const GemmPath path = choose_fp8_path(prop->major, prop->minor, f.M, f.N, f.K, kSm90Built);
  if (path == GemmPath::kSm90 && !fp8_sm90_epilogue_built(f)) {
    TORCH_WARN_ONCE("vitfast: fp8_linear's Hopper kernels are built for the FP8 chain's epilogues (no activation into "
                    "bfloat16, GELU into float8_e4m3fn, the residual); this one runs the ATen composite");
  } else if (path == GemmPath::kSm90 && !kernel_allowed(family::kFp8GemmSm90, x)) {
    // kernel_gate.h: not verified on this GPU kind (the gate warned once); the composite runs
  } else if (path == GemmPath::kSm90 && f.M > 0 && f.N > 0) {
    const at::Tensor a = dense(x.reshape({f.M, f.K})), w = dense(weight);
    const at::Tensor bf = bias.has_value() ? dense(bias->to(at::kFloat)) : at::Tensor();
    const at::Tensor scale = dense(scale_b * scale_a.reshape({}));  // x's scale folded in: one FMA per output
    const at::Tensor r = residual.has_value() ? dense(residual->reshape({f.M, f.N})) : at::Tensor();
    const at::Tensor inv = f.out_fp8 ? at::reciprocal(out_scale->reshape({1})) : at::Tensor();
    at::Tensor out = at::empty({f.M, f.N}, x.options().dtype(out_dtype));
    at::Tensor amax = want_amax ? at::zeros({1}, x.options().dtype(at::kFloat)) : at::empty({0}, x.options().dtype(at::kFloat));
    GemmParams p = linear_params(a, w, bf, out, f.M, f.N, f.K);
    p.epilogue = f.epilogue;
    p.residual = r.defined() ? r.data_ptr() : nullptr;
    p.scale_b = scale.data_ptr<float>();
    p.out_scale_inv = inv.defined() ? inv.data_ptr<float>() : nullptr;
    p.amax = want_amax ? amax.data_ptr<float>() : nullptr;
    p.out_fp8 = f.out_fp8;
    p.config = sm90_config;
    if (launch_fp8_sm90(p)) return {out.reshape(out_shape(x, f.N)), amax};
  } else if (path != GemmPath::kSm90) {
    TORCH_WARN_ONCE("vitfast: fp8_linear's FP8 kernels need an sm_90 GPU (H100/H200) and K, N multiples of 16; ",
                    prop->name, " (", prop->major, ".", prop->minor, ") at N=", f.N, ", K=", f.K,
                    " runs its ATen composite (fp32 products of the e4m3 values)");
  }
  return fp8_linear_aten(x, weight, scale_a, scale_b, bias, residual, f, out_scale, want_amax);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("fp8_linear", &fp8_linear_cuda); }

}  // namespace vitfast::gemm
