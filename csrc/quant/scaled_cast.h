#pragma once
// scaled_cast's per-element operation, shared by the CPU and CUDA kernels and free of torch's headers:
// x / scale (an IEEE fp32 division), rounded to nearest even and saturated into an 8-bit format, stored
// as that format's code. The rounding is quantize_float / quantize_fixed's (computed here in selects),
// so the code's value equals what the emulation (float_quantize / fixed_point_quantize of x / scale)
// computes, bit for bit (the tests hold it to that).
#include <cstdint>

#include "quant/rounding.h"

namespace vitfast {

enum class Cast8 : int { kE4M3 = 0, kE5M2 = 1, kInt8 = 2 };

// The FloatingPoint(E, M) code of v rounded to nearest even and saturated (e4m3fn: E = 4, M = 3, the
// all-ones code is NaN; e5m2: M = 2): the fields of quantize_float's saturating result, computed in
// selects only (no branch: a GPU warp never diverges on it).
//   normal results: rounding the fp32 pattern at bit 23 - M carries into the exponent as it should,
//     and subtracting the bias difference leaves sign-less E.M fields;
//   subnormal results (|v| below the smallest normal): |v| + 2^(emin - M + 23) rounds |v| to a
//     multiple of the subnormal step (the sum's ulp), ties to even, and the sum's low bits count the
//     steps: the code itself, 2^M (the smallest normal's) included.
template <int E, int M>
VF_HD uint8_t fp8_encode(float v) {
  constexpr int kBias = (1 << (E - 1)) - 1, kEmin = 1 - kBias, kShift = 23 - M;
  constexpr uint32_t kMaxCode = E == 4 ? 0x7eu : 0x7bu;  // 448 (0x7f is NaN) / 57344 (0x7c is inf)
  constexpr uint32_t kMinNormal = static_cast<uint32_t>(kEmin + 127) << 23;
  constexpr uint32_t kMagic = static_cast<uint32_t>(kEmin - M + 23 + 127) << 23;
  constexpr uint32_t kRebias = static_cast<uint32_t>(127 - kBias) << M;
  const uint32_t u = float_bits(v), a = u & 0x7fffffffu;
  const uint32_t rounded = (a + ((1u << (kShift - 1)) - 1u) + ((a >> kShift) & 1u)) >> kShift;  // a < 2^31: no wrap
  uint32_t code = rounded > kMaxCode + kRebias ? kMaxCode : rounded - kRebias;  // overflow and inf saturate
#if defined(__CUDA_ARCH__)
  const float sum = __fadd_rn(bits_float(a), bits_float(kMagic));  // never contracted into an FMA
#else
  const float sum = bits_float(a) + bits_float(kMagic);
#endif
  code = a < kMinNormal ? float_bits(sum) - kMagic : code;
  code = a > 0x7f800000u ? 0x7fu : code;  // NaN: all-ones exponent and mantissa, as torch's casts give
  return static_cast<uint8_t>(((u >> 24) & 0x80u) | code);
}

// The int8 code of v: round to nearest even, saturate to [-127, 127], NaN -> 0. The same value as
// quantize_fixed<kNearest> into fixed(8, 0) symmetric with clamp, computed in fp32 instead of
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
VF_HD uint8_t scaled_cast_one(float x, float scale) {
  float v = x / scale;
  // A NaN's sign, fixed here rather than left to the hardware: an x86 division returns a NaN operand
  // with its sign (and inf / inf as -NaN), a GPU's a positive canonical NaN. x's NaN keeps its sign on
  // both (what torch's casts do with it); any other NaN result is positive.
  if (v != v) v = x != x ? x : bits_float(0x7fc00000u);
  if constexpr (K == Cast8::kInt8) {
    return int8_code(v);
  } else if constexpr (K == Cast8::kE4M3) {
    return fp8_encode<4, 3>(v);
  } else {
    return fp8_encode<5, 2>(v);
  }
}

}  // namespace vitfast
