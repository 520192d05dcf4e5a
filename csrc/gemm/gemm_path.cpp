// torch.ops.vitfast.gemm_path: gemm_path.h's choice, asked from Python without a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "gemm/gemm_path.h"

namespace vitfast::gemm {
namespace {

std::string gemm_path_op(int64_t major, int64_t minor, at::ScalarType dtype, int64_t M, int64_t N, int64_t K,
                         bool accumulate_fp16, bool out_f32, std::optional<bool> sm90_built) {
  GemmCase c;
  c.major = static_cast<int>(major);
  c.minor = static_cast<int>(minor);
  c.operand = dtype == at::kHalf ? Operand::kHalf : dtype == at::kBFloat16 ? Operand::kBFloat16 : Operand::kOther;
  c.M = M;
  c.N = N;
  c.K = K;
  c.accumulate_fp16 = accumulate_fp16;
  c.out_f32 = out_f32;
  c.sm90_built = sm90_built.value_or(kSm90Built);
  return gemm_path_name(choose_gemm_path(c));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("gemm_path(int major, int minor, ScalarType dtype, int M, int N, int K, bool accumulate_fp16=False, "
        "bool out_f32=False, bool? sm90_built=None) -> str",
        &gemm_path_op);
  m.def("sm90_kernels_built() -> bool", [] { return kSm90Built; });
}

}  // namespace vitfast::gemm
