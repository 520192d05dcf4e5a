#pragma once
// The Hopper (sm_90a) kernels behind the fused linears, as plain host functions: their files are
// compiled apart from torch (setup.py, gencode sm_90a only) and called by gemm_cuda.cpp's launcher
// when gemm_path.h chooses them. Each returns a Status; only kOk means the output was written.
#include <cuda_runtime.h>

#include "gemm/gemm_params.h"

namespace vitfast::gemm::sm90 {

enum Status : int { kOk = 0, kCannotImplement = 1, kNeedsWorkspace = 2, kLaunchFailed = 3 };

// linear_gelu_sm90.cu: fp32 accumulators; + bias, then GELU (p.epilogue kGeluErf / kGeluTanh) or
// nothing (kNone), the pre-activation rounded first when p.round_pre and stored when p.pre is set.
int linear_gelu(const GemmParams& p, bool bf16, cudaStream_t stream);
// linear_residual_sm90.cu: fp32 accumulators; + bias + residual, one rounding into the residual's
// dtype: the operands' or float32 (p.out_f32: an fp32 residual stream, lp_matmul FP16_32).
int linear_residual(const GemmParams& p, bool bf16, cudaStream_t stream);
// lp_matmul_sm90.cu: fp16 operands on fp16 accumulators (FP16_16, HGMMA.F16) into fp16 outputs, the
// epilogues above; and FP16_32's float32 outputs without a residual (fp32 accumulators).
int lp_matmul_fp16_accumulate(const GemmParams& p, cudaStream_t stream);
int lp_matmul_fp32_output(const GemmParams& p, cudaStream_t stream);

}  // namespace vitfast::gemm::sm90
