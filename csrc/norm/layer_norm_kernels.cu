// layer_norm on the GPU. The widths models use run layer_norm_fixed.cuh's kernels (D a template
// parameter); any other multiple of 8 the kernels here. Forward and dx: one warp per row, 8 elements
// (one 16-byte load for 16-bit types) per lane per step; rows up to kMaxVec*256 elements stay in
// registers (every ViT width up to 1536), wider rows are re-read from memory (L1/L2) instead. Statistics in fp32, the variance in a
// second pass over the centred values. dweight/dbias: per-block column partial sums in fp32, summed
// over blocks by ATen (deterministic: no atomics).
// No torch headers here: layer_norm_cuda.cpp checks, allocates and calls the two launchers below.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "fp_convert.cuh"
#include "norm/layer_norm_fixed.cuh"
#include "norm/layer_norm_kernels.h"

namespace vitfast {
namespace {

constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels
constexpr int kMaxVec = 6;        // cached rows: up to 6 * 32 lanes * 8 elements = 1536

// Eight consecutive elements of a row <-> eight floats.
template <typename T>
struct Vec8 {
  static __device__ __forceinline__ void load(const T* p, float (&v)[8]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = to_float(e[j]);
  }
  static __device__ __forceinline__ void store(T* p, const float (&v)[8]) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = from_float<T>(v[j]);
    *reinterpret_cast<uint4*>(p) = raw;
  }
};

template <>
struct Vec8<float> {
  static __device__ __forceinline__ void load(const float* p, float (&v)[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  }
  static __device__ __forceinline__ void store(float* p, const float (&v)[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
};

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// x + residual, rounded to T (the stored sum) and returned as floats; or x alone.
template <typename T>
__device__ __forceinline__ void load_input(const T* x, const T* res, T* sum, int64_t off, float (&v)[8]) {
  Vec8<T>::load(x + off, v);
  if (res != nullptr) {
    float r[8];
    Vec8<T>::load(res + off, r);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = to_float(from_float<T>(v[j] + r[j]));
    Vec8<T>::store(sum + off, v);
  }
}

template <typename T>
__device__ __forceinline__ void normalise_store(T* out, const float* gamma, const float* beta, int64_t off, int c,
                                                float mean, float rstd, const float (&v)[8]) {
  float g[8], b[8], y[8];
  Vec8<float>::load(gamma + c, g);
  Vec8<float>::load(beta + c, b);
#pragma unroll
  for (int j = 0; j < 8; ++j) y[j] = (v[j] - mean) * rstd * g[j] + b[j];
  Vec8<T>::store(out + off, y);
}

template <typename T, bool kCached>
__global__ void __launch_bounds__(kRowsPerBlock * 32) layer_norm_fwd_kernel(
    const T* __restrict__ x, const T* __restrict__ res, const float* __restrict__ gamma, const float* __restrict__ beta,
    T* __restrict__ out, T* __restrict__ sum, float* __restrict__ mean_out, float* __restrict__ rstd_out, int64_t rows,
    int D, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int nvec = D / 8;
  const int64_t base = row * D;
  const T* src = res != nullptr ? sum : x;  // where the uncached passes re-read the row
  float s = 0.f;
  float cache[kCached ? kMaxVec : 1][8];
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int c = (i * 32 + lane) * 8;
      if (c < D) {
        load_input(x, res, sum, base + c, cache[i]);
#pragma unroll
        for (int j = 0; j < 8; ++j) s += cache[i][j];
      }
    }
  } else {
    for (int i = lane; i < nvec; i += 32) {
      float v[8];
      load_input(x, res, sum, base + i * 8, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) s += v[j];
    }
    // The passes below re-read `sum`, each lane only the vectors it wrote itself: no barrier needed.
  }
  const float mean = warp_sum(s) / D;
  float q = 0.f;
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      if ((i * 32 + lane) * 8 < D) {
#pragma unroll
        for (int j = 0; j < 8; ++j) q += (cache[i][j] - mean) * (cache[i][j] - mean);
      }
    }
  } else {
    for (int i = lane; i < nvec; i += 32) {
      float v[8];
      Vec8<T>::load(src + base + i * 8, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) q += (v[j] - mean) * (v[j] - mean);
    }
  }
  const float rstd = rsqrtf(warp_sum(q) / D + eps);
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int c = (i * 32 + lane) * 8;
      if (c < D) normalise_store(out, gamma, beta, base + c, c, mean, rstd, cache[i]);
    }
  } else {
    for (int i = lane; i < nvec; i += 32) {
      float v[8];
      Vec8<T>::load(src + base + i * 8, v);
      normalise_store(out, gamma, beta, base + i * 8, i * 8, mean, rstd, v);
    }
  }
  if (lane == 0 && mean_out != nullptr) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) + dsum, with g = dy * gamma.
template <typename T, bool kCached>
__global__ void __launch_bounds__(kRowsPerBlock * 32) layer_norm_bwd_dx_kernel(
    const T* __restrict__ dy, const T* __restrict__ dsum, const T* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ mean_in, const float* __restrict__ rstd_in, T* __restrict__ dx, int64_t rows, int D) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int nvec = D / 8;
  const int64_t base = row * D;
  const float mean = mean_in[row], rstd = rstd_in[row];
  float cg[kCached ? kMaxVec : 1][8], ch[kCached ? kMaxVec : 1][8];
  auto load_gh = [&](int c, float (&g)[8], float (&h)[8]) {
    float w[8];
    Vec8<T>::load(dy + base + c, g);
    Vec8<T>::load(x + base + c, h);
    Vec8<float>::load(gamma + c, w);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      g[j] *= w[j];
      h[j] = (h[j] - mean) * rstd;
    }
  };
  float a = 0.f, b = 0.f;
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int c = (i * 32 + lane) * 8;
      if (c < D) {
        load_gh(c, cg[i], ch[i]);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          a += cg[i][j];
          b += cg[i][j] * ch[i][j];
        }
      }
    }
  } else {
    for (int i = lane; i < nvec; i += 32) {
      float g[8], h[8];
      load_gh(i * 8, g, h);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        a += g[j];
        b += g[j] * h[j];
      }
    }
  }
  a = warp_sum(a) / D;
  b = warp_sum(b) / D;
  auto store = [&](int c, const float (&g)[8], const float (&h)[8]) {
    float d[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) d[j] = rstd * (g[j] - a - h[j] * b);
    if (dsum != nullptr) {
      float e[8];
      Vec8<T>::load(dsum + base + c, e);
#pragma unroll
      for (int j = 0; j < 8; ++j) d[j] += e[j];
    }
    Vec8<T>::store(dx + base + c, d);
  };
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int c = (i * 32 + lane) * 8;
      if (c < D) store(c, cg[i], ch[i]);
    }
  } else {
    for (int i = lane; i < nvec; i += 32) {
      float g[8], h[8];
      load_gh(i * 8, g, h);
      store(i * 8, g, h);
    }
  }
}

// Column sums of dy * xhat and dy over a slice of rows: block (32 columns) x (8 row lanes).
template <typename T>
__global__ void __launch_bounds__(256) layer_norm_bwd_params_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                                    const float* __restrict__ mean_in,
                                                                    const float* __restrict__ rstd_in,
                                                                    float* __restrict__ part_dw,
                                                                    float* __restrict__ part_db, int64_t rows, int D) {
  __shared__ float sdw[8][33], sdb[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int col = blockIdx.x * 32 + tx;
  float dw = 0.f, db = 0.f;
  if (col < D) {
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * 8 + ty; r < rows; r += static_cast<int64_t>(gridDim.y) * 8) {
      const float g = to_float(dy[r * D + col]);
      dw += g * (to_float(x[r * D + col]) - mean_in[r]) * rstd_in[r];
      db += g;
    }
  }
  sdw[ty][tx] = dw;
  sdb[ty][tx] = db;
  __syncthreads();
  if (ty == 0 && col < D) {
#pragma unroll
    for (int k = 1; k < 8; ++k) {
      dw += sdw[k][tx];
      db += sdb[k][tx];
    }
    part_dw[static_cast<int64_t>(blockIdx.y) * D + col] = dw;
    part_db[static_cast<int64_t>(blockIdx.y) * D + col] = db;
  }
}

// Calls f(T{}) for the element type of dtype.
template <typename F>
void with_type(NormDtype dtype, F&& f) {
  switch (dtype) {
    case NormDtype::kFloat: return f(float{});
    case NormDtype::kHalf: return f(__half{});
    case NormDtype::kBFloat16: return f(__nv_bfloat16{});
  }
}

// Calls f(std::integral_constant<int, D>) when D is one of norm::kFixedWidths; false otherwise.
template <typename F, size_t... I>
bool with_fixed_width(int D, F&& f, std::index_sequence<I...>) {
  return ((D == norm::kFixedWidths[I] ? (f(std::integral_constant<int, norm::kFixedWidths[I]>{}), true) : false) || ...);
}
template <typename F>
bool with_fixed_width(int D, F&& f) {
  return with_fixed_width(D, f, std::make_index_sequence<std::size(norm::kFixedWidths)>{});
}

// The fixed-width backward for T and D, with or without dsum: its launch and its grid size agree.
template <typename T, int kD>
auto bwd_fixed_kernel(bool dsum) {
  return dsum ? norm::layer_norm_bwd_fixed<T, kD, true> : norm::layer_norm_bwd_fixed<T, kD, false>;
}

// Persistent blocks: as many as fit on the device at once (the kernel's occupancy, asked once per kernel
// and device), or fewer when the rows run out first.
template <typename Kernel>
int persistent_blocks(Kernel kernel, int threads, int rows_per_warp, int64_t rows) {
  static std::mutex lock;
  static std::map<std::pair<const void*, int>, int> resident;  // (kernel, device) -> blocks on the device
  int device = 0;
  cudaGetDevice(&device);
  int blocks = 0;
  {
    const std::lock_guard<std::mutex> guard(lock);
    auto it = resident.find({reinterpret_cast<const void*>(kernel), device});
    if (it == resident.end()) {
      int sms = 0, per_sm = 0;
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0);
      it = resident.emplace(std::make_pair(reinterpret_cast<const void*>(kernel), device), std::max(per_sm, 1) * sms)
               .first;
    }
    blocks = it->second;
  }
  const int64_t rows_per_block = threads / 32 * rows_per_warp;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, blocks)));
}

}  // namespace

int layer_norm_bwd_splits(NormDtype dtype, int64_t rows, int D, bool dsum) {
  int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((rows + 63) / 64, 256)));
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      with_fixed_width(D, [&](auto width) {
        constexpr int kD = decltype(width)::value;
        splits = persistent_blocks(bwd_fixed_kernel<T, kD>(dsum), norm::kFixedBwdThreads, norm::RowShape<kD>::kRows,
                                   rows);
      });
    }
  });
  return splits;
}

cudaError_t layer_norm_fwd_launch(NormDtype dtype, const void* x, const void* res, const void* gamma,
                                  const void* beta, bool params_f32, void* out, void* sum, float* mean, float* rstd,
                                  int64_t rows, int D, float eps, cudaStream_t stream) {
  if (!params_f32 && !layer_norm_has_fixed_kernel(dtype, D)) return cudaErrorInvalidValue;
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool fixed = with_fixed_width(D, [&](auto width) {
      constexpr int kD = decltype(width)::value;
      auto launch = [&](auto kernel) {
        const int blocks = persistent_blocks(kernel, norm::kFixedThreads, norm::RowShape<kD>::kRows, rows);
        kernel<<<blocks, norm::kFixedThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(res), gamma, beta, params_f32, static_cast<T*>(out),
            static_cast<T*>(sum), mean, rstd, rows, eps, nullptr);
      };
      if (res != nullptr) {
        mean ? launch(norm::layer_norm_fwd_fixed<T, kD, true, true>)
             : launch(norm::layer_norm_fwd_fixed<T, kD, true, false>);
      } else {
        mean ? launch(norm::layer_norm_fwd_fixed<T, kD, false, true>)
             : launch(norm::layer_norm_fwd_fixed<T, kD, false, false>);
      }
    });
    if (fixed) return;
    auto kernel = D <= kMaxVec * 256 ? layer_norm_fwd_kernel<T, true> : layer_norm_fwd_kernel<T, false>;
    kernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kRowsPerBlock * 32, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(res), static_cast<const float*>(gamma),
        static_cast<const float*>(beta), static_cast<T*>(out), static_cast<T*>(sum), mean, rstd, rows, D, eps);
  });
  return cudaGetLastError();
}

bool layer_norm_has_fixed_kernel(NormDtype dtype, int D) {
  return dtype != NormDtype::kFloat && with_fixed_width(D, [](auto) {});  // the launchers' fixed cases
}

const char* layer_norm_fixed_widths() {
  static const std::string text = [] {
    std::string s;
    for (const int D : norm::kFixedWidths) s += (s.empty() ? "" : ", ") + std::to_string(D);
    return s;
  }();
  return text.c_str();
}

cudaError_t layer_norm_fp8_fwd_launch(NormDtype dtype, const void* x, const void* gamma, const void* beta,
                                      bool params_f32, const float* scale, uint8_t* out, int64_t rows, int D,
                                      float eps, cudaStream_t stream) {
  bool fixed = false;
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {  // float32 input: the composite (16 bytes of stack at 192 / 384)
      fixed = with_fixed_width(D, [&](auto width) {
        constexpr int kD = decltype(width)::value;
        const auto kernel = norm::layer_norm_fwd_fixed<T, kD, false, false, uint8_t>;
        const int blocks = persistent_blocks(kernel, norm::kFixedThreads, norm::RowShape<kD>::kRows, rows);
        kernel<<<blocks, norm::kFixedThreads, 0, stream>>>(static_cast<const T*>(x), nullptr, gamma, beta,
                                                            params_f32, out, nullptr, nullptr, nullptr, rows, eps,
                                                            scale);
      });
    }
  });
  return fixed ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t layer_norm_bwd_launch(NormDtype dtype, const void* dy, const void* dsum, const void* x,
                                  const void* gamma, bool params_f32, const float* mean, const float* rstd, void* dx,
                                  float* part, int64_t rows, int D, int splits, cudaStream_t stream) {
  if (!params_f32 && !layer_norm_has_fixed_kernel(dtype, D)) return cudaErrorInvalidValue;
  with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      const bool fixed = with_fixed_width(D, [&](auto width) {
        constexpr int kD = decltype(width)::value;
        const auto kernel = bwd_fixed_kernel<T, kD>(dsum != nullptr);
        kernel<<<splits, norm::kFixedBwdThreads, 0, stream>>>(static_cast<const T*>(dy), static_cast<const T*>(dsum),
                                                             static_cast<const T*>(x), gamma, params_f32, mean,
                                                             rstd, static_cast<T*>(dx), part, rows);
      });
      if (fixed) return;
    }
    auto kernel = D <= kMaxVec * 256 ? layer_norm_bwd_dx_kernel<T, true> : layer_norm_bwd_dx_kernel<T, false>;
    kernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kRowsPerBlock * 32, 0, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(dsum), static_cast<const T*>(x),
        static_cast<const float*>(gamma), mean, rstd, static_cast<T*>(dx), rows, D);
    if (cudaPeekAtLastError() != cudaSuccess) return;
    layer_norm_bwd_params_kernel<T><<<dim3((D + 31) / 32, splits), 256, 0, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd, part, part + static_cast<int64_t>(splits) * D,
        rows, D);
  });
  return cudaGetLastError();
}

}  // namespace vitfast
