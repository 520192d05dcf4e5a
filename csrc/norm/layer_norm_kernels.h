#pragma once
// layer_norm's CUDA kernels (layer_norm_kernels.cu) as plain host functions, compiled without
// torch's headers. x, residual, out, sum, dy, dsum, dx: contiguous (rows, D) of dtype, 16-byte
// aligned, D % 8 == 0; gamma, beta (D) and mean, rstd (rows) float32. Each returns the launch's error.
#include <cuda_runtime.h>

#include <cstdint>

namespace vitfast {

enum class NormDtype { kFloat, kHalf, kBFloat16 };

// out = (x [+ res] - mean) * rstd * gamma + beta; with res, sum = x + res rounded to dtype (res and
// sum null without one); mean and rstd of every row stored unless they are null (no backward).
cudaError_t layer_norm_fwd_launch(NormDtype dtype, const void* x, const void* res, const float* gamma,
                                  const float* beta, void* out, void* sum, float* mean, float* rstd, int64_t rows,
                                  int D, float eps, cudaStream_t stream);
// Whether layer_norm_fp8_fwd_launch has a kernel for x of dtype and width D: fp16 / bf16 at the fixed
// widths (layer_norm_fixed.cuh's kFixedWidths: every ViT's).
bool layer_norm_fp8_has_kernel(NormDtype dtype, int D);
// The fixed widths as text ("192, 256, ..."), for messages that name them.
const char* layer_norm_fixed_widths();
// out = e4m3 codes of LayerNorm(x) / *scale (scaled_cast's rounding) where layer_norm_fp8_has_kernel
// (else cudaErrorInvalidValue, nothing launched).
cudaError_t layer_norm_fp8_fwd_launch(NormDtype dtype, const void* x, const float* gamma, const float* beta,
                                      const float* scale, uint8_t* out, int64_t rows, int D, float eps,
                                      cudaStream_t stream);
// dx (+ dsum, where given) and, in part (2, splits, D), per-slice column sums of dy * xhat (dweight)
// and dy (dbias), summed over the slices by the caller; splits from layer_norm_bwd_splits.
int layer_norm_bwd_splits(NormDtype dtype, int64_t rows, int D, bool dsum);
cudaError_t layer_norm_bwd_launch(NormDtype dtype, const void* dy, const void* dsum, const void* x,
                                  const float* gamma, const float* mean, const float* rstd, void* dx, float* part,
                                  int64_t rows, int D, int splits, cudaStream_t stream);

}  // namespace vitfast
