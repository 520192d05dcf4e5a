#pragma once
// The kernels a fused op can run on a GPU (gemm/gemm_path.h and attention/attention_path.h choose
// among them), their names as torch.ops.vitfast.*_path reports them, and whether this build holds the
// sm_90a ones (setup.py defines VITFAST_WITH_SM90 where it compiled them).
namespace vitfast {

enum class KernelPath { kAten, kMmaSync, kSm90 };

inline const char* kernel_path_name(KernelPath p) {
  return p == KernelPath::kSm90 ? "sm90" : p == KernelPath::kMmaSync ? "mma_sync" : "aten";
}

#ifdef VITFAST_WITH_SM90
constexpr bool kSm90Built = true;
#else
constexpr bool kSm90Built = false;
#endif

}  // namespace vitfast
