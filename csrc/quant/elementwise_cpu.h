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

// Runs op.fast_bits over blocks of kBlock elements with a loop the compiler vectorises (stochastic
// rounding draws the block's Philox words first), then redoes with op() the elements op.slow flags
// (values in a narrow format's subnormal range). The same three functions as the
// CUDA kernels' quantize_group, so the CPU's tests check the bits the GPU computes.
template <typename scalar_t, bool kStochastic, typename Op>
void fast_path_cpu(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
  constexpr int64_t kBlock = 256;  // a multiple of 4: each block holds whole Philox groups
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 64, [&](int64_t b0, int64_t b1) {
    uint32_t rnd[kBlock] = {};
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      if constexpr (kStochastic) {
        for (int64_t g = begin / 4; 4 * g < end; ++g) {
          const Philox4 p = philox4x32_10(static_cast<uint64_t>(g), seed);
          for (int j = 0; j < 4; ++j) rnd[4 * g - begin + j] = p.v[j];
        }
      }
      uint32_t slow = 0;
      for (int64_t i = begin; i < end; ++i) {
        const uint32_t u = float_bits(static_cast<float>(in[i]));
        out[i] = static_cast<scalar_t>(bits_float(op.fast_bits(u, rnd[i - begin])));
        slow |= op.slow(u);
      }
      if (slow) {  // only the flagged elements: a narrow format's subnormals can be in most blocks
        for (int64_t i = begin; i < end; ++i) {
          const float x = static_cast<float>(in[i]);
          if (op.slow(float_bits(x))) out[i] = static_cast<scalar_t>(op(x, rnd[i - begin], i));
        }
      }
    }
  });
}

// op(float x, uint32_t random_word, int64_t index) -> float: element i draws word i % 4 of Philox
// call i / 4, as on CUDA. Ops with a fast path take the blocks above.
template <typename scalar_t, bool kStochastic, typename Op>
void elementwise_cpu(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
  if constexpr (HasFastPath<Op>::value) {
    fast_path_cpu<scalar_t, kStochastic>(in, out, n, seed, op);
  } else if constexpr (!kStochastic) {
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = static_cast<scalar_t>(op(static_cast<float>(in[i]), 0u, i));
    });
  } else {
    at::parallel_for(0, (n + 3) / 4, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        const Philox4 r = philox4x32_10(static_cast<uint64_t>(g), seed);
        const int64_t base = 4 * g;
        const int count = static_cast<int>(std::min<int64_t>(4, n - base));
        for (int j = 0; j < count; ++j) {
          out[base + j] = static_cast<scalar_t>(op(static_cast<float>(in[base + j]), r.v[j], base + j));
        }
      }
    });
  }
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
