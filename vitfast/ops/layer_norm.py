"""layer_norm: LayerNorm over the last dimension, optionally fused with the residual add before it.

Kernels: csrc/norm/layer_norm_cpu.cpp, _cuda.cpp and layer_norm_kernels.cu. Statistics (mean, variance, 1/std) are fp32 for
every dtype; with `residual`, the sum x + residual is rounded to x's dtype first (what the unfused
`x + residual` stores) and that rounded sum is normalised. Hidden sizes: any multiple of 8 (192,
384, 1280 included); dtypes float32, float16, bfloat16; weight and bias in x's dtype or float32.
"""
import numbers

import torch

from ._grad import needs_grad

__all__ = ["layer_norm", "layer_norm_ref"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(x, weight, bias, eps, residual):
    for name, t in (("x", x), ("weight", weight), ("bias", bias)) + ((("residual", residual),) if residual is not None else ()):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be a float32, float16 or bfloat16 tensor, got {t.dtype}")
    if x.dim() < 1 or x.shape[-1] % 8 or x.shape[-1] == 0:
        raise ValueError(f"x's last dimension (the hidden size) must be a positive multiple of 8, got {tuple(x.shape)}")
    D = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (D,):
            raise ValueError(f"{name} must have shape ({D},), got {tuple(t.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")


def kernel_params(x, weight, bias):
    """weight and bias as the kernels take them: in x's dtype or float32 (any other dtype cast to float32)."""
    return tuple(t if t.dtype in (x.dtype, torch.float32) else t.float() for t in (weight, bias))


def layer_norm(x, weight, bias, eps=1e-5, residual=None):
    """LayerNorm(x) over the last dimension, or with `residual`: s = x + residual, returns (s, LayerNorm(s)).

    Differentiable in x, residual, weight and bias. A residual of another dtype than x (the fp32
    residual stream meeting a bf16 branch under autocast) is added in the wider of the two dtypes;
    weight and bias in another dtype than x and float32 are cast to float32."""
    _check(x, weight, bias, eps, residual)
    return _layer_norm(x, weight, bias, eps, residual)


def _layer_norm(x, weight, bias, eps, residual=None):
    """layer_norm() on arguments its checks passed (the model backend's, valid by construction: a plain
    nn.LayerNorm over a multiple of 8), without them: a call's Python is a training step's host time."""
    if residual is not None and residual.dtype != x.dtype:
        common = torch.promote_types(x.dtype, residual.dtype)
        x, residual = x.to(common), residual.to(common)
    weight, bias = kernel_params(x, weight, bias)
    out, s, _, _ = torch.ops.vitfast.layer_norm.default(x, residual, weight, bias, float(eps),
                                                        needs_grad(x, residual, weight, bias))
    return out if residual is None else (s, out)


@torch.library.register_fake("vitfast::layer_norm")
def _(x, residual, weight, bias, eps, stats=True):
    rows = x.numel() // x.shape[-1] if stats else 0
    s = x.new_empty(x.shape) if residual is not None else x.new_empty((0,))
    return (x.new_empty(x.shape), s, x.new_empty((rows,), dtype=torch.float32),
            x.new_empty((rows,), dtype=torch.float32))


@torch.library.register_fake("vitfast::layer_norm_backward")
def _(dout, dsum, x, weight, mean, rstd):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape)


# The gradient: csrc/norm/layer_norm_autograd.cpp (the Autograd key, in C++: no Python per call).


def layer_norm_ref(x, weight, bias, eps=1e-5, residual=None):
    """Pure-PyTorch twin: the same roundings (sum in x's dtype, fp32 statistics, one rounding of the output)."""
    s = x if residual is None else x + residual
    y = torch.nn.functional.layer_norm(s.float(), (s.shape[-1],), weight.float(), bias.float(), eps).to(s.dtype)
    return y if residual is None else (s, y)
