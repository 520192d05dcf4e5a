#pragma once
// layer_norm's CUDA kernels (layer_norm_kernels.cu) as plain host functions, compiled without
// torch's headers. x, residual, out, sum, dy, dsum, dx: contiguous (rows, D) of dtype, 16-byte
// aligned, D % 8 == 0; mean, rstd (rows) float32; gamma, beta (D) float32 (params_f32), or in x's dtype
// where layer_norm_has_fixed_kernel (a bf16 / fp16 model's own parameters, read without a float32 copy;
// elsewhere cudaErrorInvalidValue, nothing launched). Each returns the launch's error.
#include <cuda_runtime.h>

#include <cstdint>

namespace vitfast {

enum class NormDtype { kFloat, kHalf, kBFloat16 };

// out = (x [+ res] - mean) * rstd * gamma + beta; with res, sum = x + res rounded to dtype (res and
// sum null without one); mean and rstd of every row stored unless they are null (no backward).
cudaError_t layer_norm_fwd_launch(NormDtype dtype, const void* x, const void* res, const void* gamma,
                                  const void* beta, bool params_f32, void* out, void* sum, float* mean, float* rstd,
                                  int64_t rows, int D, float eps, cudaStream_t stream);
// Whether x of dtype and width D runs the fixed-width kernels that may read gamma and beta in x's dtype,
// and has an FP8 forward and a fixed-width backward: fp16 / bf16 at layer_norm_fixed.cuh's kFixedWidths
// (every ViT's). float32 x runs fixed-width forwards too, on float32 parameters.
bool layer_norm_has_fixed_kernel(NormDtype dtype, int D);
// The fixed widths as text ("192, 256, ..."), for messages that name them.
const char* layer_norm_fixed_widths();
// out = e4m3 codes of LayerNorm(x) / *scale (scaled_cast's rounding) where layer_norm_has_fixed_kernel
// (else cudaErrorInvalidValue, nothing launched).
cudaError_t layer_norm_fp8_fwd_launch(NormDtype dtype, const void* x, const void* gamma, const void* beta,
                                      bool params_f32, const float* scale, uint8_t* out, int64_t rows, int D,
                                      float eps, cudaStream_t stream);
// dx (+ dsum, where given) and, in part (2, splits, D), per-slice column sums of dy * xhat (dweight)
// and dy (dbias), summed over the slices by the caller; splits from layer_norm_bwd_splits.
int layer_norm_bwd_splits(NormDtype dtype, int64_t rows, int D, bool dsum);
cudaError_t layer_norm_bwd_launch(NormDtype dtype, const void* dy, const void* dsum, const void* x,
                                  const void* gamma, bool params_f32, const float* mean, const float* rstd, void* dx,
                                  float* part, int64_t rows, int D, int splits, cudaStream_t stream);

}  // namespace vitfast
