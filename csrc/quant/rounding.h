#pragma once
// Scalar rounding into floating-point, fixed-point and block floating-point formats. Shared by the CPU
// (.cpp) and CUDA (.cu) kernels, so both devices give the same bits for the same input and seed.
//
// Floating point works on the fp32 bit pattern with integer arithmetic only: no dependence on the
// FPU's rounding mode or flush-to-zero setting, and the same answer on every device. Fixed and block
// floating point scale by powers of two in double, where every step up to the final cast is exact.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace vitfast {

enum class Rounding : int { kNearest = 0, kStochastic = 1, kNearestAway = 2 };

VF_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

VF_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// A FloatingPoint(exp, man) target, precomputed on the host (see make_float_spec in specs.h).
struct FloatSpec {
  int man;                   // mantissa bits kept, 0..23
  int emin;                  // unbiased exponent of the smallest normal
  uint32_t max_bits;         // largest finite magnitude, as fp32 bits
  uint32_t min_normal_bits;  // smallest normal magnitude, as fp32 bits
  float sub_quantum;         // spacing of the subnormals, 2^(emin - man) (exp < 8 only)
  bool fp32_grid;            // exp == 8: subnormals line up with fp32's own, bit rounding covers them
  bool subnormals;           // false: results below the smallest normal flush to zero
  bool saturate;             // overflow (and +-inf) gives +-max instead of +-inf / NaN
  bool finite;               // no infinities (e4m3fn): overflow without saturate gives NaN
  // For the branch-free path (quantize_float_fast_bits):
  int shift;                 // 23 - man
  uint32_t mask;             // the fp32 bits rounded away
  uint32_t lsb;              // 1 if shift > 0: selects the kept LSB for ties-to-even
  uint32_t overflow_bits;    // what overflow and +-inf become: max, inf or NaN
  uint32_t flush_below;      // results below this become 0 (min normal with subnormals=false, else 0)
  uint32_t slow_below;       // 0 < |x| < slow_below needs quantize_float's subnormal branch
};

// Rounds away the low `shift` bits of a non-negative fp32 pattern; a carry moves into the exponent,
// which is exactly how the value rounds to the next binade.
template <Rounding R>
VF_HD uint32_t round_low_bits(uint32_t a, int shift, uint32_t rnd) {
  if (shift == 0) return a;
  const uint32_t mask = (1u << shift) - 1u;
  uint32_t inc;
  if (R == Rounding::kNearest) {
    inc = (mask >> 1) + ((a >> shift) & 1u);  // ties go to the even neighbour
  } else if (R == Rounding::kNearestAway) {
    inc = 1u << (shift - 1);
  } else {
    inc = rnd & mask;  // P(round up) = discarded / 2^shift exactly
  }
  return (a + inc) & ~mask;
}

// Stochastic rounding draws u, the low k = min(shift, 32) bits of the random word, and rounds up iff
// u >= 2^k - F, F = floor(frac * 2^k) for the discarded fraction frac: P(up) = frac exactly whenever
// frac is a multiple of 2^-k (always, for results in the normal range), else short by < 2^-32.

// round(m / 2^shift) for an integer significand m < 2^24 and shift >= 1.
template <Rounding R>
VF_HD uint32_t round_shift_int(uint32_t m, int shift, uint32_t rnd) {
  if (shift >= 32) {
    if (R != Rounding::kStochastic) return 0u;  // m < 2^24 <= half an output step
    const int s = shift - 32;
    const uint64_t f = s >= 32 ? 0u : (m >> s);
    return static_cast<uint32_t>(static_cast<uint64_t>(rnd) + f >= (1ull << 32));
  }
  const uint32_t mask = (1u << shift) - 1u;
  const uint32_t q = m >> shift, rem = m & mask, half = 1u << (shift - 1);
  if (R == Rounding::kNearest) return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  if (R == Rounding::kNearestAway) return q + (rem >= half ? 1u : 0u);
  return q + (((rnd & mask) + rem > mask) ? 1u : 0u);
}

template <Rounding R>
VF_HD float quantize_float(float x, const FloatSpec& s, uint32_t rnd) {
  const uint32_t u = float_bits(x), sign = u & 0x80000000u, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return a > 0x7f800000u ? x : bits_float(sign | s.overflow_bits);  // NaN stays NaN
  uint32_t r;
  if (s.fp32_grid || a >= s.min_normal_bits) {
    r = round_low_bits<R>(a, 23 - s.man, rnd);
  } else {
    // Below the target's smallest normal the step is fixed at 2^(emin - man): round the integer
    // significand of x to that step.
    const bool normal32 = a >= 0x00800000u;
    const uint32_t m = normal32 ? ((a & 0x007fffffu) | 0x00800000u) : a;
    const int e = normal32 ? static_cast<int>(a >> 23) - 127 : -126;
    const uint32_t q = round_shift_int<R>(m, (s.emin - s.man) - (e - 23), rnd);
    r = q ? float_bits(static_cast<float>(q) * s.sub_quantum) : 0u;  // exact: q <= 2^man
  }
  if (r > s.max_bits) {
    r = s.overflow_bits;
  } else if (r < s.flush_below) {
    r = 0u;  // subnormals=false: flush to zero after rounding, as the hardware's FTZ mode does
  }
  return bits_float(r | sign);
}

// quantize_float as selects only, so the CPU loop vectorises (even on plain SSE2) and a GPU thread
// runs it without divergent branches. Exact except for 0 < |x| < slow_below (the target's subnormal
// range when exp < 8), which float_slow_path flags for quantize_float. `rnd` is read only by
// stochastic rounding.
template <Rounding R>
VF_HD uint32_t quantize_float_fast_bits(uint32_t u, const FloatSpec& s, uint32_t rnd = 0u) {
  // Conditions become all-ones/all-zero masks: no branches for the vectoriser to give up on.
  const uint32_t a = u & 0x7fffffffu, sign = u & 0x80000000u;
  uint32_t inc;  // round_low_bits's increment; shift == 0 (mask and lsb 0) adds nothing
  if (R == Rounding::kNearest) {
    inc = (s.mask >> 1) + ((a >> s.shift) & s.lsb);
  } else if (R == Rounding::kNearestAway) {
    inc = (s.mask >> 1) + s.lsb;
  } else {
    inc = rnd & s.mask;
  }
  uint32_t r = (a + inc) & ~s.mask;
  const uint32_t over = 0u - static_cast<uint32_t>(r > s.max_bits);
  r = (r & ~over) | (s.overflow_bits & over);
  r &= ~(0u - static_cast<uint32_t>(r < s.flush_below));
  const uint32_t nonfinite = 0u - static_cast<uint32_t>(a >= 0x7f800000u);
  const uint32_t nan = 0u - static_cast<uint32_t>(a > 0x7f800000u);
  const uint32_t special = (a & nan) | (s.overflow_bits & ~nan);
  return ((r & ~nonfinite) | (special & nonfinite)) | sign;
}

VF_HD uint32_t float_slow_path(uint32_t u, const FloatSpec& s) {
  return ((u & 0x7fffffffu) - 1u) < s.slow_below - 1u ? 1u : 0u;
}

// Rounds v (an exact scaled value) to an integer.
template <Rounding R>
VF_HD double round_to_int(double v, uint32_t rnd) {
#if defined(__CUDA_ARCH__)
  if (R == Rounding::kNearest) return rint(v);
  if (R == Rounding::kNearestAway) return round(v);
  const double f = floor(v);
#else
  if (R == Rounding::kNearest) return std::nearbyint(v);  // the default mode: ties to even
  if (R == Rounding::kNearestAway) return std::round(v);
  const double f = std::floor(v);
#endif
  // v - f is exact (v carries at most 24 significant bits); same rule as above with k = 32.
#if defined(__CUDA_ARCH__)
  const double frac32 = floor((v - f) * 0x1p32);
#else
  const double frac32 = std::floor((v - f) * 0x1p32);
#endif
  return f + ((static_cast<double>(rnd) + frac32 >= 0x1p32) ? 1.0 : 0.0);
}

struct FixedSpec {
  double scale;      // 2^fl
  double inv_scale;  // 2^-fl
  double lo, hi;     // integer range of the word
  bool clamp;
};

template <Rounding R>
VF_HD float quantize_fixed(float x, const FixedSpec& s, uint32_t rnd) {
  double q = round_to_int<R>(static_cast<double>(x) * s.scale, rnd);
  if (s.clamp) q = q < s.lo ? s.lo : (q > s.hi ? s.hi : q);  // NaN compares false and stays NaN
  return static_cast<float>((q + 0.0) * s.inv_scale);  // + 0.0: an integer word has no -0
}

// One element of a block sharing the exponent of `block_max` (max |x| over the block's finite values).
template <Rounding R>
VF_HD float quantize_block(float x, float block_max, int wl, uint32_t rnd) {
  const uint32_t a = float_bits(x) & 0x7fffffffu;
  if (a >= 0x7f800000u || !(block_max > 0.0f)) return x;  // inf/NaN pass through; all-zero block stays
  // floor(log2(block_max)), exact from the bits (fp32 subnormals included).
  const uint32_t mb = float_bits(block_max);
  int e = static_cast<int>(mb >> 23) - 127;
  if (e == -127) {
    uint32_t m = mb & 0x007fffffu;
    e = -127;
    while (m) { ++e; m >>= 1; }
    e -= 23;
  }
  const int step_exp = e + 2 - wl;
#if defined(__CUDA_ARCH__)
  const double step = ldexp(1.0, step_exp);
#else
  const double step = std::ldexp(1.0, step_exp);
#endif
  const double kmax = static_cast<double>((1ll << (wl - 1)) - 1);
  double q = round_to_int<R>(static_cast<double>(x) / step, rnd);
  q = q < -kmax ? -kmax : (q > kmax ? kmax : q);
  return static_cast<float>((q + 0.0) * step);  // + 0.0: an integer mantissa has no -0
}

}  // namespace vitfast
