#pragma once
// Host-side argument checks and format descriptions shared by the CPU and CUDA entry points.
// The Python wrappers check the same things with friendlier messages; these guard direct calls
// through torch.ops.vitfast.
#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <string_view>

#include "quant/rounding.h"
#include "quant/scaled_cast.h"

namespace vitfast {

inline void check_quant_input(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              "x must be a float32, float16 or bfloat16 tensor, got ", x.scalar_type());
}

inline Rounding parse_rounding(std::string_view rounding) {
  if (rounding == "nearest") return Rounding::kNearest;
  if (rounding == "stochastic") return Rounding::kStochastic;
  if (rounding == "nearest_away") return Rounding::kNearestAway;
  TORCH_CHECK(false, "rounding must be 'nearest', 'stochastic' or 'nearest_away', got '", std::string(rounding), "'");
}

// Stochastic rounding takes its Philox key from a CPU int64 tensor (drawn by the Python wrapper
// from a torch.Generator), so the op itself is a pure function of its arguments.
inline uint64_t read_seed(const std::optional<at::Tensor>& seed, Rounding rounding) {
  if (rounding != Rounding::kStochastic) return 0;
  TORCH_CHECK(seed.has_value() && seed->defined(), "seed is required for rounding='stochastic'");
  TORCH_CHECK(seed->device().is_cpu() && seed->scalar_type() == at::kLong && seed->numel() == 1,
              "seed must be a one-element int64 CPU tensor, got ", seed->scalar_type(), " on ", seed->device(),
              " with ", seed->numel(), " elements");
  return static_cast<uint64_t>(seed->item<int64_t>());
}

inline FloatSpec make_float_spec(int64_t exp, int64_t man, bool saturate, bool subnormals, bool finite) {
  TORCH_CHECK(exp >= 1 && exp <= 8, "exp must be in 1..8, got ", exp);
  TORCH_CHECK(man >= 0 && man <= 23, "man must be in 0..23, got ", man);
  TORCH_CHECK(!(finite && exp == 8), "finite formats need exp < 8: with exp=8 their range exceeds float32");
  const int bias = (1 << (exp - 1)) - 1;
  const int emin = 1 - bias;
  const int top = (1 << exp) - 1 - bias;  // exponent of the all-ones field
  int emax = top - 1;
  int64_t max_mant = (1ll << man) - 1;
  if (finite && man > 0) {  // the top binade holds numbers; only its all-ones mantissa is NaN
    emax = top;
    max_mant = (1ll << man) - 2;
  }
  const double max_value = emax >= emin ? std::ldexp(1.0 + std::ldexp(static_cast<double>(max_mant), -man), emax)
                                        : std::ldexp(static_cast<double>((1ll << man) - 1), emin - man);
  FloatSpec s;
  s.man = static_cast<int>(man);
  s.emin = emin;
  s.max_bits = float_bits(static_cast<float>(max_value));
  s.min_normal_bits = float_bits(static_cast<float>(std::ldexp(1.0, emin)));
  s.sub_quantum = exp < 8 ? static_cast<float>(std::ldexp(1.0, emin - static_cast<int>(man))) : 0.0f;
  s.fp32_grid = exp == 8;
  s.subnormals = subnormals;
  s.saturate = saturate;
  s.finite = finite;
  s.shift = 23 - static_cast<int>(man);
  s.mask = (1u << s.shift) - 1u;
  s.lsb = s.shift > 0 ? 1u : 0u;
  s.overflow_bits = saturate ? s.max_bits : (finite ? 0x7fc00000u : 0x7f800000u);
  s.flush_below = subnormals ? 0u : s.min_normal_bits;
  s.slow_below = exp == 8 ? 1u : s.min_normal_bits;
  return s;
}

inline FixedSpec make_fixed_spec(int64_t wl, int64_t fl, bool clamp, bool symmetric) {
  TORCH_CHECK(wl >= 1 && wl <= 53, "wl must be in 1..53, got ", wl);
  TORCH_CHECK(fl >= -256 && fl <= 256, "fl must be in -256..256, got ", fl);
  TORCH_CHECK(!(symmetric && wl < 2), "symmetric fixed point needs wl >= 2, got ", wl);
  const double top = std::ldexp(1.0, static_cast<int>(wl) - 1);
  return FixedSpec{std::ldexp(1.0, static_cast<int>(fl)), std::ldexp(1.0, -static_cast<int>(fl)),
                   symmetric ? -(top - 1.0) : -top, top - 1.0, clamp};
}

// scaled_cast's target for `dtype`: e4m3fn and e5m2 saturating (overflow and +-inf to +-max), int8
// the symmetric fixed(8, 0) word.
inline Cast8 cast8_target(at::ScalarType dtype) {
  if (dtype == at::kFloat8_e4m3fn) return Cast8::kE4M3;
  if (dtype == at::kFloat8_e5m2) return Cast8::kE5M2;
  TORCH_CHECK(dtype == at::kChar, "dtype must be torch.float8_e4m3fn, torch.float8_e5m2 or torch.int8, got ", dtype);
  return Cast8::kInt8;
}

inline void check_block_args(int64_t wl, std::optional<int64_t> block_size, std::optional<int64_t> dim) {
  TORCH_CHECK(wl >= 2 && wl <= 32, "wl must be in 2..32, got ", wl);
  TORCH_CHECK(!block_size.has_value() || *block_size >= 1, "block_size must be >= 1, got ", block_size.value_or(0));
  TORCH_CHECK(!block_size.has_value() || dim.has_value(), "block_size needs dim: the axis its blocks run along");
}

}  // namespace vitfast
