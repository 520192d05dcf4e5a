#pragma once
// The quantizers' entry points (float, fixed point, block; scaled_cast), written once and instantiated
// per device with a Launcher (CpuLauncher in elementwise_cpu.h, CudaLauncher in quantize_cuda.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>

#include <optional>
#include <string_view>

#include "quant/quant_ops.h"
#include "quant/specs.h"

namespace vitfast {

template <typename Launcher, template <Rounding> class OpT, typename scalar_t, typename... Args>
void run_with_rounding(const at::Tensor& xc, at::Tensor& out, Rounding mode, uint64_t seed, const Args&... args) {
  const scalar_t* in = xc.const_data_ptr<scalar_t>();
  scalar_t* o = out.mutable_data_ptr<scalar_t>();
  const int64_t n = xc.numel();
  switch (mode) {
    case Rounding::kNearest:
      return Launcher::template run<scalar_t, false>(in, o, n, seed, OpT<Rounding::kNearest>{args...});
    case Rounding::kNearestAway:
      return Launcher::template run<scalar_t, false>(in, o, n, seed, OpT<Rounding::kNearestAway>{args...});
    case Rounding::kStochastic:
      return Launcher::template run<scalar_t, true>(in, o, n, seed, OpT<Rounding::kStochastic>{args...});
  }
}

// Runs OpT<R>{args...} over every element of x. The output is contiguous with x's shape and dtype;
// element i (in row-major order) always draws the same random word, whatever x's strides.
template <typename Launcher, template <Rounding> class OpT, typename... Args>
at::Tensor apply_quant(const at::Tensor& xc, Rounding mode, uint64_t seed, const Args&... args) {
  typename Launcher::Guard guard(xc.device());
  at::Tensor out = at::empty(xc.sizes(), xc.options().memory_format(at::MemoryFormat::Contiguous));
  if (xc.numel() == 0) return out;
  AT_DISPATCH_V2(xc.scalar_type(), "vitfast_quantize",
                 AT_WRAP([&] { run_with_rounding<Launcher, OpT, scalar_t>(xc, out, mode, seed, args...); }),
                 at::kFloat, at::kHalf, at::kBFloat16);  // check_quant_input's dtypes
  return out;
}

template <typename Launcher>
at::Tensor float_quantize_impl(const at::Tensor& x, int64_t exp, int64_t man, std::string_view rounding,
                               bool saturate, bool subnormals, bool finite, const std::optional<at::Tensor>& seed) {
  check_quant_input(x);
  const FloatSpec spec = make_float_spec(exp, man, saturate, subnormals, finite);
  const Rounding mode = parse_rounding(rounding);
  return apply_quant<Launcher, FloatOp>(x.contiguous(), mode, read_seed(seed, mode), spec);
}

template <typename Launcher>
at::Tensor fixed_point_quantize_impl(const at::Tensor& x, int64_t wl, int64_t fl, bool clamp, bool symmetric,
                                     std::string_view rounding, const std::optional<at::Tensor>& seed) {
  check_quant_input(x);
  const FixedSpec spec = make_fixed_spec(wl, fl, clamp, symmetric);
  const Rounding mode = parse_rounding(rounding);
  return apply_quant<Launcher, FixedOp>(x.contiguous(), mode, read_seed(seed, mode), spec);
}

// max |x| over the finite elements of every group, as a contiguous float32 tensor; fills `layout`.
inline at::Tensor block_maxima(const at::Tensor& x, std::optional<int64_t> dim, std::optional<int64_t> block_size,
                               BlockLayout& layout) {
  const at::Tensor a = x.abs().masked_fill(x.isfinite().logical_not(), 0).to(at::kFloat);
  layout = BlockLayout{BlockLayout::kTensor, 1, 1, 1, 1};
  if (!dim.has_value()) return a.amax().reshape({1});
  const int64_t d = at::maybe_wrap_dim(*dim, x.dim());
  const int64_t n = x.size(d);
  const int64_t outer = c10::multiply_integers(x.sizes().begin(), x.sizes().begin() + d);
  const int64_t inner = c10::multiply_integers(x.sizes().begin() + d + 1, x.sizes().end());
  const at::Tensor a3 = a.reshape({outer, n, inner});
  if (!block_size.has_value()) {
    layout = BlockLayout{BlockLayout::kSlice, n, inner, 1, 1};
    return a3.amax(at::IntArrayRef{0, 2}).contiguous();
  }
  const int64_t b = *block_size, blocks = (n + b - 1) / b;
  layout = BlockLayout{BlockLayout::kBlock, n, inner, blocks, b};
  // Zero padding never raises a maximum of absolute values.
  const at::Tensor padded = at::constant_pad_nd(a3, {0, 0, 0, blocks * b - n}, 0);
  return padded.reshape({outer, blocks, b, inner}).amax(2).contiguous();
}

template <typename Launcher>
at::Tensor block_quantize_impl(const at::Tensor& x, int64_t wl, std::optional<int64_t> dim,
                               std::optional<int64_t> block_size, std::string_view rounding,
                               const std::optional<at::Tensor>& seed) {
  check_quant_input(x);
  check_block_args(wl, block_size, dim);
  const Rounding mode = parse_rounding(rounding);
  const uint64_t key = read_seed(seed, mode);
  const at::Tensor xc = x.contiguous();
  if (xc.numel() == 0) return at::empty_like(xc);
  BlockLayout layout;
  const at::Tensor maxima = block_maxima(xc.dim() == 0 ? xc.reshape({1}) : xc, dim, block_size, layout);
  return apply_quant<Launcher, BlockOp>(xc, mode, key, maxima.const_data_ptr<float>(), layout, static_cast<int>(wl));
}

// Launcher::cast for `target`.
template <typename Launcher, typename scalar_t>
void launch_scaled_cast(const scalar_t* in, const float* s, bool per_row, int64_t cols, uint8_t* o, int64_t n,
                        Cast8 target) {
  if (target == Cast8::kE4M3) return Launcher::template cast<scalar_t, Cast8::kE4M3>(in, s, per_row, cols, o, n);
  if (target == Cast8::kE5M2) return Launcher::template cast<scalar_t, Cast8::kE5M2>(in, s, per_row, cols, o, n);
  Launcher::template cast<scalar_t, Cast8::kInt8>(in, s, per_row, cols, o, n);
}

// x / scale rounded and saturated into an 8-bit format (see scaled_cast.h): `scale` holds one fp32 value
// for the tensor, or one per slice along dim 0 (a weight's output channels), read on the device.
template <typename Launcher>
at::Tensor scaled_cast_impl(const at::Tensor& x, const at::Tensor& scale, at::ScalarType dtype) {
  check_quant_input(x);
  const Cast8 target = cast8_target(dtype);
  TORCH_CHECK(scale.scalar_type() == at::kFloat, "scale must be a float32 tensor, got ", scale.scalar_type());
  TORCH_CHECK(scale.device() == x.device(), "scale must be on x's device (", x.device(), "), got ", scale.device());
  const bool per_row = scale.numel() != 1;
  TORCH_CHECK(!per_row || (x.dim() >= 1 && scale.numel() == x.size(0)),
              "scale must hold 1 value or x.size(0) values (one per row), got ", scale.numel());
  typename Launcher::Guard guard(x.device());
  const at::Tensor xc = x.contiguous(), sc = scale.contiguous();
  at::Tensor out = at::empty(x.sizes(), xc.options().dtype(dtype));
  const int64_t n = xc.numel();
  if (n == 0) return out;
  const int64_t cols = per_row ? n / x.size(0) : n;
  auto* o = static_cast<uint8_t*>(out.mutable_data_ptr());
  const float* s = sc.const_data_ptr<float>();
  AT_DISPATCH_V2(xc.scalar_type(), "vitfast_scaled_cast",
                 AT_WRAP([&] { launch_scaled_cast<Launcher>(xc.const_data_ptr<scalar_t>(), s, per_row, cols, o, n, target); }),
                 at::kFloat, at::kHalf, at::kBFloat16);
  return out;
}

}  // namespace vitfast
