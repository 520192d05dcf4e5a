"""linear_residual: x @ weight.T + bias + residual, the bias and residual add fused into the epilogue.

Kernels: csrc/gemm/linear_residual_cpu.cpp (ATen) and _cuda.cpp (tensor-core GEMM, fp32 accumulation,
bias and residual added in fp32, one rounding; float32 operands run ATen's ops). The result has the
residual's dtype, which may be x's or float32 (autocast's fp32 residual stream with 16-bit products).
"""
import torch

from ._linear_args import check_config, check_float_tensor, check_linear, linear_operands

__all__ = ["linear_residual", "linear_residual_ref"]


def linear_residual(x, weight, bias, residual, *, config="auto"):
    """residual + x @ weight.T + bias; x (..., K), weight (N, K), bias (N) or None, residual (..., N).
    `config` picks the Hopper kernel's configuration, as linear_gelu's does."""
    check_linear(x, weight, bias)
    check_float_tensor("residual", residual)
    shape = (*x.shape[:-1], weight.shape[0])
    if tuple(residual.shape) != shape:
        raise ValueError(f"residual must have the output's shape {shape}, got {tuple(residual.shape)}")
    x, weight, bias = linear_operands(x, weight, bias)
    residual = residual_operand(residual, x.dtype)
    f32 = residual.dtype == torch.float32
    check_config(config, "residual_f32" if f32 else "residual",
                 "linear_residual into float32" if f32 else "linear_residual")
    return _linear_residual(x, weight, bias, residual, config)


def _linear_residual(x, weight, bias, residual, config="auto"):
    """linear_residual() on arguments its checks passed (the model backend's: a plain nn.Linear, float
    operands, a configuration built for the residual's kind), without them."""
    x, weight, bias = linear_operands(x, weight, bias)
    return torch.ops.vitfast.linear_residual.default(x, weight, bias, residual_operand(residual, x.dtype), config)


def residual_operand(residual, dtype):
    """The residual as the kernels add it: in the product's dtype or float32 (another dtype promoted)."""
    if residual.dtype in (dtype, torch.float32):
        return residual
    return residual.to(torch.promote_types(residual.dtype, dtype))


@torch.library.register_fake("vitfast::linear_residual")
def _(x, weight, bias, residual, config="auto"):
    return residual.new_empty((*x.shape[:-1], weight.shape[0]))


# The gradient: csrc/gemm/linear_residual_autograd.cpp (the Autograd key, in C++: no Python per call).


def linear_residual_ref(x, weight, bias, residual):
    """Pure-PyTorch twin: F.linear(x, weight, bias) + residual."""
    return torch.nn.functional.linear(x, weight, bias) + residual
