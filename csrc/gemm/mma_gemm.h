#pragma once
// The mma.sync GEMM (mma_gemm.cuh) as a plain host function: mma_gemm.cu compiles it without torch's
// headers, and gemm_cuda.cpp checks the arguments and calls it.
#include <cuda_runtime.h>

#include "gemm/gemm_params.h"
#include "gemm/gemm_path.h"

namespace vitfast::gemm {

constexpr int kBM = 128;  // rows of a CTA tile: gridDim.y (<= 65535) tiles cover M

// Launches out = epi(a @ b^T) on `stream`: operand kHalf or kBFloat16; accumulate_fp16 (kHalf only)
// for fp16 accumulators. Needs K % 8 == 0 and M <= 65535 * kBM. Returns the launch's error.
cudaError_t mma_gemm(const GemmParams& p, Operand operand, bool accumulate_fp16, cudaStream_t stream);

}  // namespace vitfast::gemm
