// linear_gelu's backward pass (linear_gelu_backward.h): a 16-byte vector of dout and pre per thread and
// row, GELU's gradient in float (gelu_grad.h), the rounded result stored and added into the thread's
// column sums; a block's 8 row lanes are then added in shared memory into its row of `partial`, and a
// second kernel adds the partial rows in order: the same bias gradient on every run.
#include "fp_convert.cuh"
#include "gemm/gelu_grad.h"
#include "gemm/linear_gelu_backward.h"

namespace vitfast::gemm {
namespace {

constexpr int kLanes = 32;  // threads across a block's columns, one 16-byte vector each
constexpr int kRowLanes = 8;

template <class T>
struct alignas(16) Vec {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

// Grid (column strips of kLanes vectors, row blocks of kGeluGradRows), block (kLanes, kRowLanes).
template <class T, bool kTanh>
__global__ void __launch_bounds__(kLanes * kRowLanes) gelu_grad_kernel(GeluGradParams p) {
  using V = Vec<T>;
  constexpr int kN = V::kN;
  const int col = (blockIdx.x * kLanes + threadIdx.x) * kN;
  const int64_t row_end = min(int64_t(blockIdx.y + 1) * kGeluGradRows, p.M);
  float sum[kN] = {};
  if (col < p.N) {
    const auto* dout = static_cast<const T*>(p.dout);
    const auto* pre = static_cast<const T*>(p.pre);
    auto* dpre = static_cast<T*>(p.dpre);
    for (int64_t row = int64_t(blockIdx.y) * kGeluGradRows + threadIdx.y; row < row_end; row += kRowLanes) {
      const int64_t at = row * p.N + col;
      const V dy = *reinterpret_cast<const V*>(dout + at);
      const V x = *reinterpret_cast<const V*>(pre + at);
      V out;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        const float a = to_float(dy.v[i]), b = to_float(x.v[i]);
        out.v[i] = from_float<T>(kTanh ? gelu_grad_tanh(a, b) : gelu_grad_erf(a, b));
        sum[i] += to_float(out.v[i]);  // the rounded value: what dpre.sum(0) adds
      }
      *reinterpret_cast<V*>(dpre + at) = out;
    }
  }
  if (p.partial == nullptr) return;  // the same for the whole grid
  __shared__ float lanes[kRowLanes][kLanes * kN];
#pragma unroll
  for (int i = 0; i < kN; ++i) lanes[threadIdx.y][threadIdx.x * kN + i] = sum[i];
  __syncthreads();
  const int t = threadIdx.y * kLanes + threadIdx.x;
  const int c = blockIdx.x * kLanes * kN + t;
  if (t < kLanes * kN && c < p.N) {
    float s = 0.f;
#pragma unroll
    for (int y = 0; y < kRowLanes; ++y) s += lanes[y][t];
    p.partial[int64_t(blockIdx.y) * p.N + c] = s;
  }
}

// dbias[c] = the sum of partial[:, c], rows in order: kRowLanes lanes over the rows, then in shared memory.
template <class T>
__global__ void __launch_bounds__(kLanes * kRowLanes) column_sum_kernel(const float* partial, int64_t rows, int N,
                                                                         T* dbias) {
  __shared__ float lanes[kRowLanes][kLanes];
  const int c = blockIdx.x * kLanes + threadIdx.x;
  float s = 0.f;
  if (c < N) {
    for (int64_t r = threadIdx.y; r < rows; r += kRowLanes) s += partial[r * N + c];
  }
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < N) {
    float total = 0.f;
#pragma unroll
    for (int y = 0; y < kRowLanes; ++y) total += lanes[y][threadIdx.x];
    dbias[c] = from_float<T>(total);
  }
}

template <class T, bool kTanh>
cudaError_t launch(const GeluGradParams& p, cudaStream_t stream) {
  constexpr int kN = Vec<T>::kN;
  const int64_t row_blocks = gelu_grad_row_blocks(p.M);
  const dim3 block(kLanes, kRowLanes);
  const dim3 grid((p.N / kN + kLanes - 1) / kLanes, static_cast<unsigned>(row_blocks));
  gelu_grad_kernel<T, kTanh><<<grid, block, 0, stream>>>(p);
  if (p.partial != nullptr) {
    column_sum_kernel<T><<<(p.N + kLanes - 1) / kLanes, block, 0, stream>>>(p.partial, row_blocks, p.N,
                                                                            static_cast<T*>(p.dbias));
  }
  return cudaGetLastError();
}

template <class T>
cudaError_t launch(const GeluGradParams& p, cudaStream_t stream) {
  return p.tanh ? launch<T, true>(p, stream) : launch<T, false>(p, stream);
}

}  // namespace

cudaError_t gelu_grad_bias(const GeluGradParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case GradDtype::kHalf: return launch<__half>(p, stream);
    case GradDtype::kBFloat16: return launch<__nv_bfloat16>(p, stream);
    default: return launch<float>(p, stream);
  }
}

}  // namespace vitfast::gemm
