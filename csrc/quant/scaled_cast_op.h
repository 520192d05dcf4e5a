#pragma once
// scaled_cast called through the dispatcher from other ops' composites (fp8_linear's, layer_norm_fp8's):
// the CPU or CUDA kernel of x's device, the one definition of the 8-bit rounding.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ATen.h>

namespace vitfast {

inline at::Tensor scaled_cast_op(const at::Tensor& x, const at::Tensor& scale, at::ScalarType dtype) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("vitfast::scaled_cast", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::ScalarType)>();
  return op.call(x, scale, dtype);
}

}  // namespace vitfast
