#pragma once
// The GEMM's arguments as plain data: shared by the ATen-facing launchers and the CUTLASS sm90 kernels,
// which are compiled without torch's headers (csrc/gemm/sm90/).
#include <cstdint>

namespace vitfast::gemm {

enum Epilogue : int { kNone = 0, kGeluErf = 1, kGeluTanh = 2, kResidual = 3 };

struct GemmParams {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* bias = nullptr;       // (N) or null: float32 where bias_f32, else in the operand dtype
  bool bias_f32 = true;             // linear_gelu's and linear_residual's kernels read the operand dtype's
  const void* residual = nullptr;   // (M, N) in out's dtype, for kResidual
  void* out = nullptr;              // (M, N)
  void* pre = nullptr;              // (M, N) in the operand dtype: GELU's input, rounded (linear_gelu) or null
  int64_t M = 0;
  int N = 0, K = 0;
  int epilogue = kNone;
  bool round_pre = false;  // GELU of the pre-activation rounded to the operand dtype (as F.gelu(F.linear()))
  bool out_f32 = false;    // out and residual are float32, else the operand dtype
  int config = 0;          // sm90_config.h's Sm90Config for the Hopper kernels (0: the default for the shape)
  // fp8_linear (e4m3 operands): out = (acc * scale_b[n] + bias[n]) then the activation or + residual;
  // into e4m3 (out_fp8) as value * out_scale_inv, rounded to nearest even, saturated.
  const float* scale_b = nullptr;        // (N): x's dequantisation scale times the weight's, per feature
  const float* out_scale_inv = nullptr;  // 1 value: 1 / the output's scale (e4m3 outputs)
  float* amax = nullptr;                 // 1 value: max |value| before the output's rounding, or null
  bool out_fp8 = false;                  // out is e4m3, else bf16
};

}  // namespace vitfast::gemm
