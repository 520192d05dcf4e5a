#pragma once
// Multithreaded elementwise driver for the quantizers. Element i of the (contiguous) input gets the
// Philox word (i % 4) of counter i / 4, the same as on CUDA (elementwise_cuda.cuh).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <type_traits>

#include "quant/philox.h"
#include "quant/quant_ops.h"
#include "quant/scaled_cast.h"

namespace vitfast {

// Runs op.fast_bits over blocks of float32 with a loop the compiler vectorises, and redoes with op()
// any block holding an element op.slow flags (rare: values in a narrow format's subnormal range).
template <typename Op>
void fast_path_cpu(const float* in, float* out, int64_t n, const Op& op) {
  constexpr int64_t kBlock = 256;
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      uint32_t slow = 0;
      for (int64_t i = begin; i < end; ++i) {
        const uint32_t u = float_bits(in[i]);
        out[i] = bits_float(op.fast_bits(u));
        slow |= op.slow(u);
      }
      if (slow) {
        for (int64_t i = begin; i < end; ++i) out[i] = op(in[i], 0u, i);
      }
    }
  });
}

// op(float x, uint32_t random_word, int64_t index) -> float. Deterministic float32 with a fast path
// takes the vectorised loop above; the rest goes group by group through quantize_group, as on CUDA.
template <typename scalar_t, bool kStochastic, typename Op>
void elementwise_cpu(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
  if constexpr (!kStochastic && std::is_same_v<scalar_t, float> && HasFastPath<Op>::value) {
    fast_path_cpu(in, out, n, op);
    return;
  }
  at::parallel_for(0, (n + 3) / 4, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      uint32_t r[4] = {0u, 0u, 0u, 0u};
      if constexpr (kStochastic) {
        const Philox4 p = philox4x32_10(static_cast<uint64_t>(g), seed);
        for (int j = 0; j < 4; ++j) r[j] = p.v[j];
      }
      const int64_t base = 4 * g;
      const int count = static_cast<int>(std::min<int64_t>(4, n - base));
      float x[4] = {0.0f, 0.0f, 0.0f, 0.0f}, y[4];
      for (int j = 0; j < count; ++j) x[j] = static_cast<float>(in[base + j]);
      quantize_group(op, x, r, g, count, y);
      for (int j = 0; j < count; ++j) out[base + j] = static_cast<scalar_t>(y[j]);
    }
  });
}

template <typename scalar_t, Cast8 K>
void scaled_cast_cpu(const scalar_t* in, const float* scale, bool per_row, int64_t cols, uint8_t* out, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = scaled_cast_one<K>(static_cast<float>(in[i]), scale[per_row ? i / cols : 0]);
    }
  });
}

}  // namespace vitfast

namespace vitfast {

// Device policy for quantize.h's entry points.
struct CpuLauncher {
  struct Guard {
    explicit Guard(c10::Device) {}
  };
  template <typename scalar_t, bool kStochastic, typename Op>
  static void run(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
    elementwise_cpu<scalar_t, kStochastic>(in, out, n, seed, op);
  }
  template <typename scalar_t, Cast8 K>
  static void cast(const scalar_t* in, const float* scale, bool per_row, int64_t cols, uint8_t* out, int64_t n) {
    scaled_cast_cpu<scalar_t, K>(in, scale, per_row, cols, out, n);
  }
};

}  // namespace vitfast
