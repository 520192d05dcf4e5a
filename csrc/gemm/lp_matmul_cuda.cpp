// lp_matmul on the GPU: fp16 operands on tensor cores, fp16 or fp32 accumulators (HGMMA on an
// H100/H200 where gemm_path.h allows, else HMMA.16816.F16 / .F32).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "gemm/linear_cuda.h"
#include "gemm/lp_matmul.h"
#include "kernel_gate_cuda.h"

namespace vitfast::gemm {
namespace {

at::Tensor lp_matmul_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          c10::string_view epilogue, const std::optional<at::Tensor>& residual, bool accumulate_fp16,
                          at::ScalarType out_dtype) {
  const auto [M, N, K, epi] =
      check_lp_matmul(x, weight, bias, std::string(epilogue), residual, accumulate_fp16, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor a = dense(x.reshape({M, K})), b = dense(weight);
  const at::Tensor bf = bias.has_value() ? dense(bias->to(at::kFloat)) : at::Tensor();
  const at::Tensor r = residual.has_value() ? dense(residual->reshape({M, N})) : at::Tensor();
  at::Tensor out = at::empty({M, N}, x.options().dtype(out_dtype));
  GemmParams p = linear_params(a, b, bf, out, M, N, K);
  p.residual = r.defined() ? r.data_ptr() : nullptr;
  p.epilogue = epi;
  p.out_f32 = out_dtype == at::kFloat;
  if (K == 0) {
    out.zero_();  // empty sums; the epilogue still applies
    at::Tensor v = out.to(at::kFloat);
    if (bf.defined()) v = v + bf;
    if (epi == kGeluErf) v = at::gelu(v, "none");
    if (epi == kGeluTanh) v = at::gelu(v, "tanh");
    if (epi == kResidual) v = v + r.to(at::kFloat);
    return v.to(out_dtype).reshape(out_shape(x, N));
  }
  // Its operands are dense() and its output fresh, which both kernels take. No ATen op sums in fp16: where
  // neither kernel family may run here (kernel_gate.h), the CPU twin does, on copies.
  const GemmPath path = gemm_path_for(x, M, N, K, accumulate_fp16, out_dtype == at::kFloat, /*fused=*/true);
  if (path == GemmPath::kAten) {
    return lp_matmul_cpu(x.cpu(), weight.cpu(), to_host(bias), epilogue, to_host(residual), accumulate_fp16, out_dtype)
        .to(x.device());
  }
  TORCH_CHECK(launch_gemm(p, at::kHalf, accumulate_fp16, path), "lp_matmul: no GEMM kernel takes these operands");
  return out.reshape(out_shape(x, N));
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("lp_matmul", &lp_matmul_cuda); }

}  // namespace vitfast::gemm
