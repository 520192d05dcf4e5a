// lp_matmul on the CPU: an emulation with fixed semantics (see vitfast/ops/lp_matmul.py).
//   accumulate_fp16: for each output, k runs in chunks of 16 (the k-depth of one m16n8k16 MMA); the
//     16 products (exact in fp32) are summed in fp32 in k order, and the chunk sum is added to the
//     running fp16 accumulator as acc = fp16(fp32(acc) + chunk) (round to nearest even).
//   otherwise: fp32 products and fp32 sums (ATen's fp32 matmul of the fp16 values).
// The epilogue then runs in fp32 on the accumulator value, rounded once into out_dtype.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "gemm/lp_matmul.h"

namespace vitfast::gemm {
namespace {

at::Tensor fp16_accumulate(const at::Tensor& x2, const at::Tensor& w) {
  const at::Tensor a = x2.to(at::kFloat).contiguous(), b = w.to(at::kFloat).contiguous();
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  at::Tensor acc = at::empty({M, N}, a.options());
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = acc.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        const float* ra = pa + m * K;
        const float* rb = pb + n * K;
        c10::Half c = 0.f;
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
          float s = 0.f;
          for (int64_t k = k0; k < std::min<int64_t>(k0 + 16, K); ++k) s += ra[k] * rb[k];
          c = static_cast<c10::Half>(static_cast<float>(c) + s);
        }
        pc[m * N + n] = static_cast<float>(c);
      }
    }
  });
  return acc;
}

}  // namespace

at::Tensor lp_matmul_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         c10::string_view epilogue, const std::optional<at::Tensor>& residual, bool accumulate_fp16,
                         at::ScalarType out_dtype) {
  const auto [M, N, K, epi] =
      check_lp_matmul(x, weight, bias, std::string(epilogue), residual, accumulate_fp16, out_dtype);
  const at::Tensor x2 = x.reshape({M, K});
  at::Tensor v = accumulate_fp16 ? fp16_accumulate(x2, weight) : at::mm(x2.to(at::kFloat), weight.to(at::kFloat).t());
  if (bias.has_value()) v = v + bias->to(at::kFloat);
  if (epi == kGeluErf) v = at::gelu(v, "none");
  if (epi == kGeluTanh) v = at::gelu(v, "tanh");
  if (epi == kResidual) v = v + residual->reshape({M, N}).to(at::kFloat);
  return v.to(out_dtype).reshape(out_shape(x, N));
}

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("lp_matmul", &lp_matmul_cpu); }

}  // namespace vitfast::gemm
