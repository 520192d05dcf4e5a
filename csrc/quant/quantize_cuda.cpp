// The quantizers on CUDA: quantize.h's entry points with the CUDA launcher, which supplies the stream
// and the grid cap to the kernels of <op>_cuda.cu (compiled without torch's headers).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

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

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) {
  m.impl("float_quantize", &float_quantize_impl<CudaLauncher>);
  m.impl("fixed_point_quantize", &fixed_point_quantize_impl<CudaLauncher>);
  m.impl("block_quantize", &block_quantize_impl<CudaLauncher>);
  m.impl("scaled_cast", &scaled_cast_impl<CudaLauncher>);
}

}  // namespace vitfast
