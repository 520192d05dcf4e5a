// The quantizers on CUDA: quantize.h's entry points with the CUDA launcher, which supplies the stream
// and the grid cap to the kernels of <op>_cuda.cu (compiled without torch's headers), or with the CPU
// one where kernel_gate.h says those kernels may not run on this GPU kind.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "kernel_gate_cuda.h"
#include "quant/elementwise_cpu.h"
#include "quant/elementwise_cuda.h"
#include "quant/scaled_cast_cuda.h"
#include "quant/quantize.h"

namespace vitfast {
namespace {

// Device policy for quantize.h's entry points.
struct CudaLauncher {
  using Guard = c10::cuda::CUDAGuard;
  template <typename scalar_t, bool kStochastic, typename Op>
  static void run(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
    C10_CUDA_CHECK((elementwise_cuda<scalar_t, kStochastic>(in, out, n, seed, op, max_blocks(),
                                                            at::cuda::getCurrentCUDAStream())));
  }
  template <typename scalar_t, Cast8 K>
  static void cast(const scalar_t* in, const float* scale, bool per_row, int64_t cols, uint8_t* out, int64_t n) {
    C10_CUDA_CHECK((scaled_cast_cuda<scalar_t, K>(in, scale, per_row, cols, out, n, max_blocks(),
                                                  at::cuda::getCurrentCUDAStream())));
  }
  static int64_t max_blocks() {
    return static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
  }
};

// Each quantizer's CUDA kernel where its family may run on x's GPU (kernel_gate.h), else its CPU kernel
// on copies: the same bits (the GPU tests hold the two to it, every 2^32 fp32 input included), slower.
at::Tensor float_quantize_gpu(const at::Tensor& x, int64_t exp, int64_t man, std::string_view rounding, bool saturate,
                              bool subnormals, bool finite, const std::optional<at::Tensor>& seed) {
  return cuda_or_host(family::kQuantizers, &float_quantize_impl<CudaLauncher>, &float_quantize_impl<CpuLauncher>, x,
                      exp, man, rounding, saturate, subnormals, finite, seed);
}

at::Tensor fixed_point_quantize_gpu(const at::Tensor& x, int64_t wl, int64_t fl, bool clamp, bool symmetric,
                                    std::string_view rounding, const std::optional<at::Tensor>& seed) {
  return cuda_or_host(family::kQuantizers, &fixed_point_quantize_impl<CudaLauncher>,
                      &fixed_point_quantize_impl<CpuLauncher>, x, wl, fl, clamp, symmetric, rounding, seed);
}

at::Tensor block_quantize_gpu(const at::Tensor& x, int64_t wl, std::optional<int64_t> dim,
                              std::optional<int64_t> block_size, std::string_view rounding,
                              const std::optional<at::Tensor>& seed) {
  return cuda_or_host(family::kQuantizers, &block_quantize_impl<CudaLauncher>, &block_quantize_impl<CpuLauncher>, x,
                      wl, dim, block_size, rounding, seed);
}

at::Tensor scaled_cast_gpu(const at::Tensor& x, const at::Tensor& scale, at::ScalarType dtype) {
  return cuda_or_host(family::kScaledCast, &scaled_cast_impl<CudaLauncher>, &scaled_cast_impl<CpuLauncher>, x, scale,
                      dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) {
  m.impl("float_quantize", &float_quantize_gpu);
  m.impl("fixed_point_quantize", &fixed_point_quantize_gpu);
  m.impl("block_quantize", &block_quantize_gpu);
  m.impl("scaled_cast", &scaled_cast_gpu);
}

}  // namespace vitfast
