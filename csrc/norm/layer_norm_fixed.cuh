#pragma once
// layer_norm at the widths models use (kFixedWidths), with D a template parameter. What makes them
// faster than the any-width kernels of layer_norm_kernels.cu:
// - a row spans kLanes lanes of kPer 16-byte vectors each, so every lane works at every width (192 =
//   8 lanes x 3 vectors, four rows per warp; 384 = 16 x 3; 768 = 32 x 3; 1024 = 32 x 4; 1280 = 32 x 5);
// - persistent warps walk the rows with the next row's loads issued before this row is reduced and
//   written (its bytes in flight while the shuffles and stores run);
// - every load of a row before its first store (x and the residual, then the sum), gamma and beta held
//   once per thread (registers to 3 vectors, shared memory above), no mean/rstd writes without a
//   backward to read them;
// - the backward computes dx and the dweight/dbias partial sums in one pass over dy and x (before: a
//   second kernel re-read both), each block's partials summed in a fixed order (deterministic); fp16
//   and bf16 only (float32 at 1024+ would spill: the any-width kernels serve float32).
#include <type_traits>

#include "fp_convert.cuh"
#include "quant/scaled_cast.h"

namespace vitfast::norm {

constexpr int kFixedWidths[] = {192, 256, 384, 512, 768, 1024, 1280};
constexpr int kFixedThreads = 256;
// The backward holds each lane's dweight/dbias sums in registers (16 per vector): 130-250 of them,
// so blocks of 4 warps, 2-3 resident per SM, rather than one block of 8.
constexpr int kFixedBwdThreads = 128;

template <int D>
struct RowShape {
  static constexpr int kVecs = D / 8;
  static constexpr int kLanes = kVecs % 32 == 0 ? 32 : kVecs % 16 == 0 ? 16 : 8;
  static constexpr int kPer = kVecs / kLanes;  // 16-byte vectors per lane (of 16-bit elements)
  static constexpr int kRows = 32 / kLanes;    // rows per warp at a time
  static constexpr bool kParamsInRegisters = false;
  // The backward's resident blocks asked of ptxas: 3 fit at <= 3 vectors per lane (168 registers, no
  // spill; left alone, ptxas picked 128 and spilled in one fp16 variant); wider rows need all 255.
  static constexpr int kBwdBlocksPerSm = kPer <= 3 ? 3 : 1;
  static_assert(D % 8 == 0 && kVecs % kLanes == 0 && kPer <= 5, "not a fixed layer_norm width");
};

// Eight elements as they sit in memory: one 16-byte word (fp16 / bf16) or two (float).
template <typename T>
struct Pack8 {
  static constexpr int kWords = sizeof(T) / 2;
  uint4 w[kWords];
  __device__ __forceinline__ void load(const T* p) {
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = reinterpret_cast<const uint4*>(p)[k];
  }
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = make_uint4(0, 0, 0, 0);
  }
  __device__ __forceinline__ void store(T* p) const {
#pragma unroll
    for (int k = 0; k < kWords; ++k) reinterpret_cast<uint4*>(p)[k] = w[k];
  }
  __device__ __forceinline__ void unpack(float (&v)[8]) const {
    const T* e = reinterpret_cast<const T*>(w);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = to_float(e[j]);
  }
  __device__ __forceinline__ void pack(const float (&v)[8]) {
    T* e = reinterpret_cast<T*>(w);
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = from_float<T>(v[j]);
  }
};

// The sum over the kLanes lanes holding one row (xor offsets below kLanes stay inside the group).
template <int kLanes>
__device__ __forceinline__ float group_sum(float s) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// The first column of a lane's vector i (vectors interleaved over the row's lanes: coalesced loads).
template <int D>
__device__ __forceinline__ int column(int i, int sub) {
  return (i * RowShape<D>::kLanes + sub) * 8;
}

// A lane's vectors of `row` from a and, with kSecond, b; zeros past the last row (they add nothing).
template <int D, bool kSecond, typename T, int kB>
__device__ __forceinline__ void fetch_row(Pack8<T> (&pa)[RowShape<D>::kPer], const T* a, Pack8<T> (&pb)[kB],
                                          const T* b, int64_t row, int64_t rows, int sub) {
#pragma unroll
  for (int i = 0; i < RowShape<D>::kPer; ++i) {
    const int64_t off = row * D + column<D>(i, sub);
    if (row < rows) {
      pa[i].load(a + off);
      if constexpr (kSecond) pb[i].load(b + off);
    } else {
      pa[i].clear();
      if constexpr (kSecond) pb[i].clear();
    }
  }
}

// One element of gamma or beta, stored as float32 or in the input's T: a bf16 / fp16 model's own
// parameters are read as they are, with no float32 copy made per call. Read once per block (below),
// so the choice costs nothing per row.
template <typename T>
__device__ __forceinline__ float param_at(const void* p, int c, bool f32) {
  return f32 ? static_cast<const float*>(p)[c] : to_float(static_cast<const T*>(p)[c]);
}

// gamma (and beta) for the columns of one lane, as float: in registers, or read from the block's shared
// copy.
template <int D, int kCount>
struct Params {
  using R = RowShape<D>;
  float reg[R::kParamsInRegisters ? kCount * R::kPer : 1][8];
  const float* shared;
  template <typename T>
  __device__ __forceinline__ void init(const void* const (&src)[kCount], bool f32, float* smem, int sub) {
    if constexpr (R::kParamsInRegisters) {
#pragma unroll
      for (int t = 0; t < kCount; ++t) {
#pragma unroll
        for (int i = 0; i < R::kPer; ++i) {
#pragma unroll
          for (int j = 0; j < 8; ++j) reg[t * R::kPer + i][j] = param_at<T>(src[t], column<D>(i, sub) + j, f32);
        }
      }
    } else {
      for (int c = threadIdx.x; c < D; c += blockDim.x) {
#pragma unroll
        for (int t = 0; t < kCount; ++t) smem[t * D + c] = param_at<T>(src[t], c, f32);
      }
      shared = smem;
      __syncthreads();
    }
  }
  __device__ __forceinline__ float get(int t, int i, int j, int sub) const {
    if constexpr (R::kParamsInRegisters) return reg[t * R::kPer + i][j];
    return shared[t * D + column<D>(i, sub) + j];
  }
};

// Eight outputs of a row stored: rounded to T (16 bytes, or 32 for float), or with TOut = uint8_t as the
// e4m3 codes of y / scale (scaled_cast's rounding; 8 bytes), the FP8 chain's input.
template <typename T, typename TOut>
__device__ __forceinline__ void store8(TOut* p, const float (&y)[8], float scale) {
  if constexpr (std::is_same_v<TOut, uint8_t>) {
    uint32_t w[2] = {0u, 0u};  // packed by shifts: bytes written through a pointer would go to the stack
#pragma unroll
    for (int j = 0; j < 8; ++j) w[j / 4] |= static_cast<uint32_t>(scaled_cast_one<Cast8::kE4M3>(y[j], scale)) << (8 * (j % 4));
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
    Pack8<T> q;
    q.pack(y);
    q.store(p);
  }
}

// out = (s - mean) * rstd * gamma + beta, s = x or (x + res rounded to T, stored in sum); out in T, or
// (TOut = uint8_t) e4m3 codes of out / *out_scale. gamma and beta float32 (params_f32) or T.
template <typename T, int D, bool kResidual, bool kStats, typename TOut = T>
__global__ void __launch_bounds__(kFixedThreads) layer_norm_fwd_fixed(
    const T* __restrict__ x, const T* __restrict__ res, const void* __restrict__ gamma, const void* __restrict__ beta,
    bool params_f32, TOut* __restrict__ out, T* __restrict__ sum, float* __restrict__ mean_out,
    float* __restrict__ rstd_out, int64_t rows, float eps, const float* __restrict__ out_scale) {
  using R = RowShape<D>;
  const float scale = std::is_same_v<TOut, uint8_t> ? *out_scale : 1.0f;
  __shared__ __align__(16) float smem[R::kParamsInRegisters ? 4 : 2 * D];
  const int lane = threadIdx.x & 31, sub = lane % R::kLanes, group = lane / R::kLanes;
  Params<D, 2> params;
  const void* const src[2] = {gamma, beta};
  params.template init<T>(src, params_f32, smem, sub);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t stride = (static_cast<int64_t>(gridDim.x) * blockDim.x >> 5) * R::kRows;
  Pack8<T> px[R::kPer], pr[kResidual ? R::kPer : 1];
  auto fetch = [&](int64_t first) { fetch_row<D, kResidual>(px, x, pr, res, first + group, rows, sub); };
  fetch(warp * R::kRows);
  // The loop bound is the warp's (not the group's) so every lane reaches every shuffle.
  for (int64_t first = warp * R::kRows; first < rows; first += stride) {
    const int64_t row = first + group;
    const bool valid = row < rows;
    float v[R::kPer][8];
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < R::kPer; ++i) {
      px[i].unpack(v[i]);
      if constexpr (kResidual) {
        float r[8];
        pr[i].unpack(r);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[i][j] = to_float(from_float<T>(v[i][j] + r[j]));
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) s += v[i][j];
    }
    fetch(first + stride);  // the next row's bytes in flight from here on
    if (kResidual && valid) {
#pragma unroll
      for (int i = 0; i < R::kPer; ++i) {
        Pack8<T> p;
        p.pack(v[i]);
        p.store(sum + row * D + column<D>(i, sub));
      }
    }
    const float mean = group_sum<R::kLanes>(s) / D;
    float q = 0.f;
#pragma unroll
    for (int i = 0; i < R::kPer; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) q += (v[i][j] - mean) * (v[i][j] - mean);
    }
    const float rstd = rsqrtf(group_sum<R::kLanes>(q) / D + eps);
    if (valid) {
#pragma unroll
      for (int i = 0; i < R::kPer; ++i) {
        float y[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) y[j] = (v[i][j] - mean) * rstd * params.get(0, i, j, sub) + params.get(1, i, j, sub);
        store8<T>(out + row * D + column<D>(i, sub), y, scale);
      }
      if (kStats && sub == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
      }
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ dsum), g = dy * gamma; and the block's column
// sums of dy * xhat and dy into part (2, gridDim.x, D). gamma float32 (params_f32) or T.
template <typename T, int D, bool kDsum>
__global__ void __launch_bounds__(kFixedBwdThreads, RowShape<D>::kBwdBlocksPerSm) layer_norm_bwd_fixed(
    const T* __restrict__ dy, const T* __restrict__ dsum, const T* __restrict__ x, const void* __restrict__ gamma,
    bool params_f32, const float* __restrict__ mean_in, const float* __restrict__ rstd_in, T* __restrict__ dx,
    float* __restrict__ part, int64_t rows) {
  using R = RowShape<D>;
  __shared__ __align__(16) float smem[R::kParamsInRegisters ? 2 * D : 3 * D];  // gamma unless in registers; sums
  float* sums = smem + (R::kParamsInRegisters ? 0 : D);
  const int lane = threadIdx.x & 31, sub = lane % R::kLanes, group = lane / R::kLanes, warp_in_block = threadIdx.x >> 5;
  Params<D, 1> params;
  const void* const src[1] = {gamma};
  params.template init<T>(src, params_f32, smem, sub);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t stride = (static_cast<int64_t>(gridDim.x) * blockDim.x >> 5) * R::kRows;
  // This row's dy and x stay packed (16-bit) while the next row's arrive; each pass unpacks them again.
  Pack8<T> dy_now[R::kPer], x_now[R::kPer], dy_next[R::kPer], x_next[R::kPer];
  float dw[R::kPer][8] = {}, db[R::kPer][8] = {};
  auto fetch = [&](int64_t first) { fetch_row<D, true>(dy_next, dy, x_next, x, first + group, rows, sub); };
  fetch(warp * R::kRows);
  for (int64_t first = warp * R::kRows; first < rows; first += stride) {
    const int64_t row = first + group;
    const bool valid = row < rows;
#pragma unroll
    for (int i = 0; i < R::kPer; ++i) {
      dy_now[i] = dy_next[i];
      x_now[i] = x_next[i];
    }
    fetch(first + stride);  // the next row's bytes in flight from here on
    const float mean = valid ? mean_in[row] : 0.f, rstd = valid ? rstd_in[row] : 0.f;
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int i = 0; i < R::kPer; ++i) {
      float d[8], h[8];
      dy_now[i].unpack(d);
      x_now[i].unpack(h);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        h[j] = (h[j] - mean) * rstd;
        const float g = d[j] * params.get(0, i, j, sub);
        dw[i][j] += d[j] * h[j];
        db[i][j] += d[j];
        a += g;
        b += g * h[j];
      }
    }
    a = group_sum<R::kLanes>(a) / D;
    b = group_sum<R::kLanes>(b) / D;
    if (valid) {
#pragma unroll
      for (int i = 0; i < R::kPer; ++i) {
        const int64_t off = row * D + column<D>(i, sub);
        float d[8], h[8];
        dy_now[i].unpack(d);
        x_now[i].unpack(h);
#pragma unroll
        for (int j = 0; j < 8; ++j) d[j] = rstd * (d[j] * params.get(0, i, j, sub) - a - (h[j] - mean) * rstd * b);
        if constexpr (kDsum) {
          Pack8<T> e;
          float ev[8];
          e.load(dsum + off);
          e.unpack(ev);
#pragma unroll
          for (int j = 0; j < 8; ++j) d[j] += ev[j];
        }
        Pack8<T> p;
        p.pack(d);
        p.store(dx + off);
      }
    }
  }
  // The column sums: the groups of a warp by shuffles, then the warps one after another (a fixed
  // order, so the result does not depend on timing).
#pragma unroll
  for (int i = 0; i < R::kPer; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int o = R::kLanes; o < 32; o <<= 1) {
        dw[i][j] += __shfl_xor_sync(0xffffffffu, dw[i][j], o);
        db[i][j] += __shfl_xor_sync(0xffffffffu, db[i][j], o);
      }
    }
  }
  for (int w = 0; w < kFixedBwdThreads / 32; ++w) {
    if (warp_in_block == w && group == 0) {
#pragma unroll
      for (int i = 0; i < R::kPer; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int c = column<D>(i, sub) + j;
          sums[c] = w == 0 ? dw[i][j] : sums[c] + dw[i][j];
          sums[D + c] = w == 0 ? db[i][j] : sums[D + c] + db[i][j];
        }
      }
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    part[static_cast<int64_t>(blockIdx.x) * D + c] = sums[c];
    part[(static_cast<int64_t>(gridDim.x) + blockIdx.x) * D + c] = sums[D + c];
  }
}

}  // namespace vitfast::norm
