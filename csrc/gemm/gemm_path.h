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
#include <cstring>

#include "gemm/gemm_params.h"
#include "gemm/sm90_config.h"
#include "kernel_path.h"

namespace vitfast::gemm {

using GemmPath = KernelPath;
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

// fp8_linear's kernel: the sm90 one at compute capability 9.0 for rows of 16 bytes (K and N multiples of
// 16: e4m3 operands and outputs move by TMA); ATen's composite (the emulation) anywhere else.
inline GemmPath choose_fp8_path(int major, int minor, int64_t M, int64_t N, int64_t K, bool sm90_built) {
  const bool sm90 = sm90_built && major == 9 && minor == 0 && K > 0 && K % 16 == 0 && N % 16 == 0 &&
                    M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX;
  return sm90 ? GemmPath::kSm90 : GemmPath::kAten;
}

// "auto", "coop_128x128", ... -> the configuration; kCount for a name that is none of them.
inline Sm90Config sm90_config_named(const char* name) {
  for (int i = 0; i < static_cast<int>(Sm90Config::kCount); ++i) {
    if (std::strcmp(name, kSm90ConfigNames[i]) == 0) return static_cast<Sm90Config>(i);
  }
  return Sm90Config::kCount;
}

inline bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// Why the sm90 kernels cannot take p's tensors (null when they can). TMA moves a, b, the residual, the
// output and the stored pre-activation through descriptors that need a 16-byte aligned base, row
// strides in multiples of 16 bytes below 2^40 and sizes below 2^32; CUTLASS's can_implement checks the
// shape's alignment, not the pointers', and under NDEBUG a descriptor it fails to encode is only
// printed, and the kernel launched with it. The epilogue reads the bias in 16-byte vectors.
inline const char* sm90_refusal(const GemmParams& p, int operand_bytes) {
  // e4m3 operands write bf16 unless out_fp8
  const int64_t out_bytes = p.out_f32 ? 4 : p.out_fp8 ? 1 : operand_bytes == 1 ? 2 : operand_bytes;
  if (p.M < 1 || p.N < 1 || p.K < 1 || p.M > INT32_MAX) return "M, N and K must lie in [1, 2^31)";
  if (int64_t(p.K) * operand_bytes % 16 != 0) return "rows of a and b are not a multiple of 16 bytes (K)";
  if (int64_t(p.N) * out_bytes % 16 != 0 || int64_t(p.N) * operand_bytes % 16 != 0) {
    return "rows of the output are not a multiple of 16 bytes (N)";
  }
  if (!aligned16(p.a)) return "a is not 16-byte aligned";
  if (!aligned16(p.b)) return "b (the weight) is not 16-byte aligned";
  if (!aligned16(p.out)) return "the output is not 16-byte aligned";
  if (p.epilogue == kResidual && !aligned16(p.residual)) return "the residual is not 16-byte aligned";
  if (p.pre && !aligned16(p.pre)) return "the pre-activation output is not 16-byte aligned";
  if (p.bias && !aligned16(p.bias)) return "the bias is not 16-byte aligned";
  if (p.scale_b && !aligned16(p.scale_b)) return "the weight's scales are not 16-byte aligned";
  return nullptr;
}

// Why the mma.sync kernel cannot take p's tensors (null when it can): a and b are read in 16-byte
// cp.async chunks, the output written in pairs.
inline const char* mma_sync_refusal(const GemmParams& p, int operand_bytes) {
  if (p.K % 8 != 0) return "K is not a multiple of 8";
  if (!aligned16(p.a)) return "a is not 16-byte aligned";
  if (!aligned16(p.b)) return "b (the weight) is not 16-byte aligned";
  if (reinterpret_cast<uintptr_t>(p.out) % (2 * (p.out_f32 ? 4 : operand_bytes)) != 0) {
    return "the output is not aligned to a pair of elements";
  }
  return nullptr;
}

inline const char* gemm_path_name(GemmPath p) { return kernel_path_name(p); }

}  // namespace vitfast::gemm
