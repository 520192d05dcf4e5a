#pragma once
// Multithreaded elementwise driver for the quantizers. Element i of the (contiguous) input gets the
// Philox word (i % 4) of counter i / 4, the same as on CUDA (elementwise_cuda.cuh).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "quant/philox.h"

namespace vitfast {

// op(float x, uint32_t random_word, int64_t index) -> float
template <typename scalar_t, bool kStochastic, typename Op>
void elementwise_cpu(const scalar_t* in, scalar_t* out, int64_t n, uint64_t seed, const Op& op) {
  if (!kStochastic) {
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = static_cast<scalar_t>(op(static_cast<float>(in[i]), 0u, i));
    });
    return;
  }
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
};

}  // namespace vitfast
