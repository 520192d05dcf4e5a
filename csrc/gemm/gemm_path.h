#pragma once
// Which kernel runs a fused linear (linear_gelu, linear_residual, lp_matmul) on a GPU. This is the one
// place the choice is made; it is plain host code, so CPU builds answer it too (torch.ops.vitfast.gemm_path,
// which the dispatch tests ask for every capability, dtype, shape and accumulator).
//   sm90     CUTLASS's TMA + wgmma kernels (csrc/gemm/sm90/): compute capability 9.0 exactly (sm_90a code
//            runs nowhere else), rows of 16 bytes (N % 8 == 0), K of one k-tile or more, any output but
//            float32 from an fp16 accumulator (FP16_16 into float32: no such kernel);
//   mma_sync our mma.sync kernel (mma_gemm.cuh): any other fp16/bf16 case with K % 8 == 0;
//   aten     linear_gelu / linear_residual on other dtypes or K, or with VITFAST_FUSED_GEMM=0: ATen's ops.
#include <cstdint>

#include "gemm/gemm_params.h"

namespace vitfast::gemm {

enum class GemmPath { kAten, kMmaSync, kSm90 };
enum class Operand { kOther, kHalf, kBFloat16 };

struct GemmCase {
  int major = 0, minor = 0;  // the device's compute capability
  Operand operand = Operand::kOther;
  int64_t M = 0, N = 0, K = 0;
  bool accumulate_fp16 = false;  // FP16_16 (lp_matmul); fp16 operands only
  bool out_f32 = false;          // float32 outputs: lp_matmul's out_dtype, linear_residual's fp32 residual
  bool sm90_built = false;       // this build holds the sm90a kernels
  bool fused = true;             // VITFAST_FUSED_GEMM is not "0" (linear_gelu / linear_residual)
};

constexpr int kSm90MinK = 64;  // the kernels' k-tile; shorter sums are memory-bound anyway

inline GemmPath choose_gemm_path(const GemmCase& c) {
  if (c.operand == Operand::kOther || c.K <= 0 || c.K % 8 != 0 || !c.fused) return GemmPath::kAten;
  if (c.accumulate_fp16 && c.operand != Operand::kHalf) return GemmPath::kAten;
  const bool sm90 = c.sm90_built && c.major == 9 && c.minor == 0 && !(c.out_f32 && c.accumulate_fp16) &&
                    c.N % 8 == 0 && c.K >= kSm90MinK && c.M <= INT32_MAX && c.N <= INT32_MAX;
  return sm90 ? GemmPath::kSm90 : GemmPath::kMmaSync;
}

inline const char* gemm_path_name(GemmPath p) {
  return p == GemmPath::kSm90 ? "sm90" : p == GemmPath::kMmaSync ? "mma_sync" : "aten";
}

#ifdef VITFAST_WITH_SM90
constexpr bool kSm90Built = true;
#else
constexpr bool kSm90Built = false;
#endif

}  // namespace vitfast::gemm
