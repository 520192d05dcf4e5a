#pragma once
// linear_gelu's backward pass over the saved pre-activation, one read of each input:
//   dpre = dout * GELU'(pre), rounded to their dtype          (ATen's gelu_backward, gelu_grad.h)
//   dbias[n] = sum over rows of the rounded dpre[:, n], in fp32 (what dpre.sum(0) adds)
// The bias gradient is summed in two deterministic steps: each block of kGeluGradRows rows writes its
// columns' sums into a float32 (row blocks, N) buffer, then one pass adds those rows. Plain host
// functions: linear_gelu_backward_kernels.cu compiles them without torch's headers.
#include <cuda_runtime.h>

#include <cstdint>

namespace vitfast::gemm {

enum class GradDtype { kHalf, kBFloat16, kFloat };

constexpr int kGeluGradRows = 128;  // rows per block: 50,432 ViT-B tokens -> 394 partial rows (4.8 MB at N = 3,072)

struct GeluGradParams {
  const void* dout = nullptr;  // (M, N), rows of N, contiguous and 16-byte aligned, all three
  const void* pre = nullptr;
  void* dpre = nullptr;
  float* partial = nullptr;  // (gelu_grad_row_blocks(M), N), or null: no bias gradient
  void* dbias = nullptr;     // (N) in the dtype; written when partial is set
  int64_t M = 0;
  int N = 0;                 // a multiple of 16 bytes' elements (8 for 16-bit dtypes, 4 for float32)
  GradDtype dtype = GradDtype::kFloat;
  bool tanh = false;
};

inline int64_t gelu_grad_row_blocks(int64_t M) { return (M + kGeluGradRows - 1) / kGeluGradRows; }

// Why the kernels cannot take p (null when they can): the shape limits of their grid.
inline const char* gelu_grad_refusal(int64_t M, int64_t N, int element_bytes) {
  if (M < 1 || N < 1) return "an empty gradient";
  if (N * element_bytes % 16 != 0) return "rows of the gradient are not a multiple of 16 bytes";
  if (N > INT32_MAX || gelu_grad_row_blocks(M) > 65535) return "more rows or columns than the grid covers";
  return nullptr;
}

cudaError_t gelu_grad_bias(const GeluGradParams& p, cudaStream_t stream);

}  // namespace vitfast::gemm
