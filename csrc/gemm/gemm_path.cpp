// torch.ops.vitfast.gemm_path: gemm_path.h's choice, asked from Python without a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "gemm/gemm.h"

namespace vitfast::gemm {
namespace {

std::string gemm_path_op(int64_t major, int64_t minor, at::ScalarType dtype, int64_t M, int64_t N, int64_t K,
                         bool accumulate_fp16, bool out_f32, std::optional<bool> sm90_built) {
  return gemm_path_name(choose_gemm_path(gemm_case(static_cast<int>(major), static_cast<int>(minor), dtype, M, N, K,
                                                   accumulate_fp16, out_f32, sm90_built.value_or(kSm90Built),
                                                   /*fused=*/true)));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("gemm_path(int major, int minor, ScalarType dtype, int M, int N, int K, bool accumulate_fp16=False, "
        "bool out_f32=False, bool? sm90_built=None) -> str",
        &gemm_path_op);
  m.def("sm90_kernels_built() -> bool", [] { return kSm90Built; });
}

}  // namespace vitfast::gemm
