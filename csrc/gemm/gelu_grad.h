#pragma once
// GELU's gradient, dy * GELU'(x), in float as ATen's gelu_backward computes it (the same operations in
// the same order as GeluBackwardCUDAKernelImpl), so that linear_gelu's fused backward pass rounds to
// what F.gelu's backward gives: exact (erf) or the tanh form. Plain C++: the host test compiles it too.
#include <math.h>

#include "macros.h"

namespace vitfast::gemm {

// Phi(x) + x phi(x)
VF_HD float gelu_grad_erf(float dy, float x) {
  constexpr float kAlpha = static_cast<float>(M_SQRT1_2);
  constexpr float kBeta = static_cast<float>(M_2_SQRTPI * M_SQRT1_2 * 0.5);  // 1 / sqrt(2 pi)
  const float cdf = 0.5f * (1.f + erff(x * kAlpha));
  const float pdf = expf(-0.5f * x * x) * kBeta;
  return dy * (cdf + x * pdf);
}

// d/dx of 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
VF_HD float gelu_grad_tanh(float dy, float x) {
  constexpr float kBeta = static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5);  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float x_sq = x * x;
  const float x_cube = x_sq * x;
  const float inner = kBeta * (x + kKappa * x_cube);
  const float t = tanhf(inner);
  const float left = 0.5f * x;
  const float right = 1.f + t;
  const float left_derivative = 0.5f * right;
  const float tanh_derivative = 1.f - t * t;
  const float inner_derivative = kBeta * (1.f + 3.f * kKappa * x_sq);
  const float right_derivative = left * tanh_derivative * inner_derivative;
  return dy * (left_derivative + right_derivative);
}

}  // namespace vitfast::gemm
