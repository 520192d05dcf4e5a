#pragma once
// Host helpers shared by the forward and backward launchers: head-dim dispatch, the dynamic
// shared-memory opt-in, and grids split so that gridDim.y (batch x heads) stays within 65535.
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "attention/attention_path.h"

namespace vitfast {

// Calls f(std::integral_constant<int, D>{}) for the head dims the kernels are built for.
template <typename F>
void dispatch_head_dim(int d, F&& f) {
  with_head_dim(d, f, [&] {
    TORCH_CHECK(false, "q's head dim must be one of 32, 64, 80, 96, 128 for the CUDA kernels, got ", d);
  });
}

// Launch kernel over grid (x_blocks, B*H) in slices of at most 65535 (batch, head) pairs.
template <typename Kernel, typename Params>
void launch_sliced(Kernel kernel, Params p, int x_blocks, int threads, int smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  const int total = p.B * p.H;
  for (int start = 0; start < total; start += 65535) {
    p.bh_offset = start;
    const dim3 grid(x_blocks, std::min(65535, total - start));
    kernel<<<grid, threads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace vitfast
