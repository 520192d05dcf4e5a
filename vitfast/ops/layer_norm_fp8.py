"""layer_norm_fp8: LayerNorm over the last dimension, written as e4m3 codes with a static scale: the
input of an FP8 chain's qkv and fc1 products (vitfast.ops.fp8_linear), in one pass over x.

Kernels: csrc/norm/layer_norm_fp8.h (checks and the ATen composite that defines it),
layer_norm_fixed.cuh (the CUDA kernel: fp16 / bf16 x at the widths 192-1280), layer_norm_cpu.cpp and
layer_norm_cuda.cpp. The LayerNorm is computed in float32 (layer_norm's statistics); each output is
scaled_cast's e4m3 code of y / scale: an IEEE division, rounded to nearest even, saturated to +-448,
NaN kept. Elsewhere (float32 x, other widths) the CUDA op runs the composite and warns once.
Inference only: no gradient.
"""
import torch

from .layer_norm import _check as _check_layer_norm, kernel_params

__all__ = ["layer_norm_fp8", "layer_norm_fp8_ref"]

E4M3 = torch.float8_e4m3fn


def _check(x, weight, bias, scale, eps):
    _check_layer_norm(x, weight, bias, eps, None)
    if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32 or scale.numel() != 1:
        got = f"{scale.numel()} {scale.dtype} value(s)" if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(f"scale must be a float32 tensor holding one value, got {got}")
    if scale.device != x.device:
        raise ValueError(f"scale must be on x's device ({x.device}), got {scale.device}")


def layer_norm_fp8(x, weight, bias, scale, eps=1e-5):
    """e4m3 codes of LayerNorm(x) / scale (x: (..., D), D a multiple of 8; weight and bias (D) in x's
    dtype or float32; scale: one float32 value on x's device, read by the kernel)."""
    _check(x, weight, bias, scale, eps)
    weight, bias = kernel_params(x, weight, bias)
    return torch.ops.vitfast.layer_norm_fp8.default(x, weight, bias, scale, float(eps))


@torch.library.register_fake("vitfast::layer_norm_fp8")
def _(x, weight, bias, scale, eps):
    return x.new_empty(x.shape, dtype=E4M3)


def layer_norm_fp8_ref(x, weight, bias, scale, eps=1e-5):
    """Pure-PyTorch twin: the composite's steps (float32 statistics: the mean, then the mean of the
    squared centred values) and scaled_cast_ref's rounding."""
    from .scaled_cast import scaled_cast_ref
    s = x.reshape(-1, x.shape[-1]).float()
    mean = s.mean(1)
    var = (s - mean.unsqueeze(1)).square().mean(1)
    rstd = (var + eps).rsqrt()
    y = (s - mean.unsqueeze(1)) * rstd.unsqueeze(1) * weight.float() + bias.float()
    return scaled_cast_ref(y, scale.reshape(1), E4M3).reshape(x.shape)
