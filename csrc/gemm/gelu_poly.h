#pragma once
// Exact (erf) GELU for the GEMM epilogues whose output has at most 16 bits, in about 18 instructions
// where erff takes 26 (9 of them selects between its two polynomials), so that fc1's epilogue can keep
// pace with its mainloop (csrc/gemm/NOTES.md, "The GELU epilogue at the product's cost": built into the
// sm90 kernels and SASS-checked, included by them once a GPU sitting can verify them).
//
//   GELU(v) = v * Phi(v) = v * (v < 0 ? e : 1 - e),   e = Phi(-|v|) = 2^P(|v|)
//
// P is log2 Phi(-x) on [0, kGeluCut] as a polynomial of degree 10 in x = |v| (tools/gelu_coefficients.py:
// Chebyshev interpolation of the float64 function, 2^-21 from it; summed in float32, 2^-18 relative at
// worst, near the cut). One exponential and no cancellation: the negative side is as accurate as the
// positive, where torch's 1 + erff(z) loses its digits below v = -3.5.
// Beyond the cut e is 0: v for v > 5.5 (Phi(-5.5) = 1.9e-8 is below half a unit of every 16-bit
// format there), -0 for v < -5.5 (|GELU| < 1.1e-7 there; torch's float32 form gives -0 from -5.54),
// NaN for -inf and NaN, +inf for +inf.
//
// Rounded to bf16 or fp16 it is the correctly rounded GELU of every 16-bit input above the cut but a
// few near a rounding midpoint, one unit away (tests/ops/test_gelu_poly.py counts them exhaustively on
// the host). A float32 output keeps erff (lp_matmul's FP16_32 into float32): 2^-18 is far from
// float32's last place.
#include <math.h>

#include "macros.h"

namespace vitfast::gemm {

constexpr float kGeluCut = 5.5f;

// 2^p: one MUFU.EX2 on the GPU (ex2.approx.ftz, an approximation: PTX ISA), the host's exp2f elsewhere,
// so a host build of gelu_poly can differ from the GPU's in float32's last places before the rounding.
VF_HD float exp2_fast(float p) {
#if defined(__CUDA_ARCH__)
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(p));
  return e;
#else
  return exp2f(p);
#endif
}

VF_HD float gelu_poly(float v) {
  // tools/gelu_coefficients.py's output, the constant first (a local table: unrolled, its loads fold away)
  constexpr float kGeluLog2Phi[11] = {-0x1.fffffap-1f, -0x1.26af5cp+0f, -0x1.d62d08p-2f, -0x1.af0702p-5f,
                                      0x1.d6975p-8f, -0x1.71683ap-13f, -0x1.a47e38p-13f, 0x1.cc122ap-15f,
                                      -0x1.f4847p-18f, 0x1.2612dep-21f, -0x1.28679cp-26f};
  const float a = fabsf(v);
  const float x = fminf(a, kGeluCut);  // fmin(NaN, cut) is the cut
  float p = kGeluLog2Phi[10];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 9; i >= 0; --i) p = fmaf(p, x, kGeluLog2Phi[i]);
  // Beyond the cut the exponent falls by 2^40 per unit: 2^-huge = 0 (+inf and -inf included).
  p = fminf(p, fmaf(a, -0x1p40f, 0x1p40f * kGeluCut));
  const float e = exp2_fast(p);
  return v * (v < 0.f ? e : 1.f - e);
}

}  // namespace vitfast::gemm
