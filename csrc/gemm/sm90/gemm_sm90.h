#pragma once
// The Hopper (sm_90a) kernels behind the fused linears, as plain host functions: their files are
// compiled apart from torch (setup.py, gencode sm_90a only) and called by gemm_cuda.cpp's launcher
// when gemm_path.h chooses them, in the configuration p.config names (sm90_config.h). Each returns a
// Status; only kOk means the output was written.
#include <cuda_runtime.h>

#include "gemm/gemm_params.h"

namespace vitfast::gemm::sm90 {

// kRefused: gemm_path.h's sm90_refusal (alignment, strides); kNotBuilt: p.config is not among the
// configurations sm90_config.h builds for the kernel kind; the others are CUTLASS's answers.
enum Status : int { kOk = 0, kCannotImplement = 1, kNeedsWorkspace = 2, kLaunchFailed = 3, kRefused = 4, kNotBuilt = 5 };

// linear_gelu_sm90_{bf16,fp16}.cu: fp32 accumulators; + bias, then GELU (p.epilogue kGeluErf / kGeluTanh) or
// nothing (kNone), the pre-activation rounded first when p.round_pre and stored when p.pre is set.
int linear_gelu_bf16(const GemmParams& p, cudaStream_t stream);
int linear_gelu_fp16(const GemmParams& p, cudaStream_t stream);
// linear_residual_sm90_{bf16,fp16}.cu: fp32 accumulators; + bias + residual, one rounding into the residual's
// dtype: the operands' or float32 (p.out_f32: an fp32 residual stream, lp_matmul FP16_32).
int linear_residual_bf16(const GemmParams& p, cudaStream_t stream);
int linear_residual_fp16(const GemmParams& p, cudaStream_t stream);
// lp_matmul_sm90.cu: fp16 operands on fp16 accumulators (FP16_16, HGMMA.F16) into fp16 outputs, the
// epilogues above; and FP16_32's float32 outputs without a residual (fp32 accumulators).
int lp_matmul_fp16_accumulate(const GemmParams& p, cudaStream_t stream);
int lp_matmul_fp32_output(const GemmParams& p, cudaStream_t stream);
// fp8_linear_sm90.cu / fp8_linear_residual_sm90.cu: e4m3 operands, fp32 accumulators (fp8_gemm_sm90.cuh):
// x's and the weight's scales and the bias, then GELU or nothing into bf16 or e4m3 (p.out_fp8), or the
// bf16 residual into bf16; the amax of the values before the output's rounding when p.amax is set.
int fp8_linear(const GemmParams& p, cudaStream_t stream);
int fp8_linear_residual(const GemmParams& p, cudaStream_t stream);

}  // namespace vitfast::gemm::sm90
