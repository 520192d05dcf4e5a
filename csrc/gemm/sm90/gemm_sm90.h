#pragma once
// The Hopper (sm_90a) kernels behind the fused linears, as plain host functions: their files are
// compiled apart from torch (setup.py, gencode sm_90a only) and called by gemm_cuda.cpp's launcher
// when gemm_path.h chooses them, in the configuration p.config names (sm90_config.h). Each returns a
// Status; only kOk means the output was written.
#include <cuda_runtime.h>

#include "gemm/gemm_params.h"

namespace vitfast::gemm::sm90 {

// kRefused: gemm_path.h's sm90_refusal (alignment, strides); kNotBuilt: p.config is not among the
// configurations sm90_config.h builds for the kernel kind; kEpilogueNotBuilt: no kernel of this kind is
// compiled for p's epilogue (the caller runs its next path); kBiasDtype: p.bias_f32 is not the kind's
// bias dtype (the next path reads either); the others are CUTLASS's answers.
enum Status : int {
  kOk = 0, kCannotImplement = 1, kNeedsWorkspace = 2, kLaunchFailed = 3, kRefused = 4, kNotBuilt = 5,
  kEpilogueNotBuilt = 6, kBiasDtype = 7
};

// linear_gelu_sm90_{bf16,fp16}.cu: fp32 accumulators; + bias, then GELU (p.epilogue kGeluErf / kGeluTanh)
// of the pre-activation rounded to the operand dtype, which is stored when p.pre is set.
int linear_gelu_bf16(const GemmParams& p, cudaStream_t stream);
int linear_gelu_fp16(const GemmParams& p, cudaStream_t stream);
// linear_residual_sm90_{bf16,fp16}.cu: fp32 accumulators; + bias + residual, one rounding into the residual's
// dtype: the operands' or float32 (p.out_f32: an fp32 residual stream, lp_matmul FP16_32).
int linear_residual_bf16(const GemmParams& p, cudaStream_t stream);
int linear_residual_fp16(const GemmParams& p, cudaStream_t stream);
// lp_matmul_sm90.cu: fp16 operands. FP16_16: fp16 accumulators (HGMMA.F16) into fp16, + bias then
// nothing, exact GELU or + residual; FP16_32: fp32 accumulators into fp16 or float32 (p.out_f32), + bias
// then nothing or exact GELU (its residual: linear_residual's kernels). No rounding before GELU; tanh
// GELU is not built (kEpilogueNotBuilt: the mma.sync kernel runs it).
int lp_matmul_fp16_accumulate(const GemmParams& p, cudaStream_t stream);
int lp_matmul_fp32_accumulate(const GemmParams& p, cudaStream_t stream);
int lp_matmul_fp32_output(const GemmParams& p, cudaStream_t stream);
// fp8_linear_sm90.cu / fp8_linear_residual_sm90.cu: e4m3 operands, fp32 accumulators (fp8_gemm_sm90.cuh):
// the per-feature scales (x's folded in: p.scale_b) and the bias, then nothing into bf16, GELU (exact or
// tanh) into e4m3 (p.out_fp8), or the bf16 residual into bf16 (any other: kEpilogueNotBuilt); the amax
// of the values before the output's rounding when p.amax is set.
int fp8_linear(const GemmParams& p, cudaStream_t stream);
int fp8_linear_residual(const GemmParams& p, cudaStream_t stream);

}  // namespace vitfast::gemm::sm90
