#pragma once
// layer_norm_fp8's checks and its ATen composite, shared by the CPU kernel and the CUDA one (which runs
// it at the widths the fixed-width kernels were not built for). The composite is the op's definition:
// the LayerNorm of each row in float32 (layer_norm_rows_fp32), then scaled_cast's e4m3 code of y / scale
// (nearest even, saturated to +-448, NaN kept): the input of the FP8 chain's qkv and fc1 products.
#include <ATen/ATen.h>

#include "norm/layer_norm.h"
#include "quant/scaled_cast_op.h"

namespace vitfast {

inline int64_t layer_norm_fp8_check(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                    const at::Tensor& scale) {
  const int64_t D = layer_norm_check(x, std::nullopt, weight, bias);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == 1,
              "layer_norm_fp8: scale must be one float32 value, got ", scale.numel(), " of ", scale.scalar_type());
  TORCH_CHECK(scale.device() == x.device(), "layer_norm_fp8: scale must be on x's device");
  return D;
}

inline at::Tensor layer_norm_fp8_aten(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      const at::Tensor& scale, double eps) {
  const int64_t D = layer_norm_fp8_check(x, weight, bias, scale);
  const at::Tensor y = std::get<0>(layer_norm_rows_fp32(x.reshape({-1, D}), weight, bias, eps));
  return scaled_cast_op(y, scale.reshape({1}), at::kFloat8_e4m3fn).reshape(x.sizes());
}

}  // namespace vitfast
