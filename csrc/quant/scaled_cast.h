#pragma once
// scaled_cast's per-element operation, shared by the CPU and CUDA kernels and free of torch's headers:
// x / scale (an IEEE fp32 division), rounded to nearest even and saturated into an 8-bit format, stored
// as that format's code. The rounding is quantize_float / quantize_fixed's, so the code's value equals
// what the emulation (float_quantize / fixed_point_quantize of x / scale) computes, bit for bit.
#include <cstdint>

#include "quant/rounding.h"

namespace vitfast {

enum class Cast8 : int { kE4M3 = 0, kE5M2 = 1, kInt8 = 2 };

// The targets' specs, built on the host by specs.h (make_scaled_cast_spec).
struct ScaledCastSpec {
  FloatSpec fp8;   // e4m3fn or e5m2, saturating
  FixedSpec int8;  // fixed(8, 0), symmetric, clamped: -127..127
};

// The code of a value on the FloatingPoint(E, M) grid (or NaN): sign, biased exponent and the top M
// mantissa bits of its fp32 pattern, or a subnormal's multiple of the smallest step. Saturation has
// already removed infinities.
template <int E, int M>
VF_HD uint8_t fp8_code(float q) {
  const uint32_t u = float_bits(q), a = u & 0x7fffffffu;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (a > 0x7f800000u) return sign | 0x7fu;  // NaN: all-ones exponent and mantissa, as torch's casts give
  constexpr int kBias = (1 << (E - 1)) - 1, kEmin = 1 - kBias;
  const int e = static_cast<int>(a >> 23) - 127;
  if (e >= kEmin) return sign | static_cast<uint8_t>(((e + kBias) << M) | ((a & 0x007fffffu) >> (23 - M)));
  // Subnormal (or zero): an exact multiple of 2^(kEmin - M), scaled to an integer exactly.
  return sign | static_cast<uint8_t>(bits_float(a) * static_cast<float>(1u << (M - kEmin)));
}

// The int8 code of v: round to nearest even, saturate to [-127, 127], NaN -> 0. The same value as
// quantize_fixed<kNearest> into fixed(8, 0) symmetric with clamp (s.int8), computed in fp32 instead of
// double: rounding an fp32 value to an integer is exact in either, and so is the clamp.
VF_HD uint8_t int8_code(float v) {
#if defined(__CUDA_ARCH__)
  float q = rintf(v);
#else
  float q = std::nearbyint(v);  // the default mode: ties to even
#endif
  q = q < -127.0f ? -127.0f : (q > 127.0f ? 127.0f : q);  // NaN compares false and stays NaN
  return static_cast<uint8_t>(static_cast<int8_t>(q == q ? q : 0.0f));  // int8 has no NaN: 0
}

template <Cast8 K>
VF_HD uint8_t scaled_cast_one(float x, float scale, const ScaledCastSpec& s) {
  const float v = x / scale;
  if constexpr (K == Cast8::kInt8) {
    (void)s;
    return int8_code(v);
  } else if constexpr (K == Cast8::kE4M3) {
    return fp8_code<4, 3>(quantize_float<Rounding::kNearest>(v, s.fp8, 0u));
  } else {
    return fp8_code<5, 2>(quantize_float<Rounding::kNearest>(v, s.fp8, 0u));
  }
}

}  // namespace vitfast
