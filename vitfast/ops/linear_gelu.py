"""linear_gelu: GELU(x @ weight.T + bias) with the bias and GELU fused into the matrix product's epilogue.

Kernels: csrc/gemm/linear_gelu_cpu.cpp (ATen linear + gelu) and _cuda.cpp (tensor-core GEMM, fp32
accumulation, for fp16/bf16; float32 runs ATen's ops). Like F.gelu(F.linear(x, weight, bias)), the
pre-activation is rounded to x's dtype before GELU. On an H100/H200 the exact GELU is that of
csrc/gemm/gelu_poly.h: on every bf16 and fp16 pre-activation it rounds to the correctly rounded GELU but
for a few inputs one unit away, so it can differ from F.gelu by one unit there, and below -3.5, where
F.gelu's float32 1 + erf(v / sqrt 2) has lost its digits, by more (ours is the closer to the exact value).
The backward uses ATen matrix products after one pass over the saved pre-activation that gives GELU's
gradient (ATen's gelu_backward formula, in float) and the bias gradient together (on a GPU one kernel,
csrc/gemm/linear_gelu_backward_kernels.cu).
"""
import torch

from ._grad import needs_grad
from ._linear_args import check_config, check_linear, gelu_kind, linear_operands

__all__ = ["linear_gelu", "linear_gelu_ref"]

APPROXIMATE = ("none", "tanh")


def linear_gelu(x, weight, bias=None, approximate="none", *, config="auto"):
    """GELU(x @ weight.T + bias); x (..., K), weight (N, K), bias (N) or None -> (..., N). Under autocast
    the operands are cast to the autocast dtype, as F.linear's are. `config` picks the Hopper kernel's
    tile, cluster and schedule (csrc/gemm/sm90_config.h; "auto": the default for the shape); it changes
    the time, never the result, and has nothing to pick where the Hopper kernels do not run."""
    check_linear(x, weight, bias)
    if approximate not in APPROXIMATE:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    x, weight, bias = linear_operands(x, weight, bias)
    save_pre = needs_grad(x, weight, bias)
    check_config(config, gelu_kind(approximate, save_pre),
                 f"linear_gelu{' with a gradient' if save_pre else ''}"
                 f"{', approximate=tanh' if approximate == 'tanh' else ''}")
    return _linear_gelu(x, weight, bias, approximate, config)


def _linear_gelu(x, weight, bias, approximate, config="auto"):
    """linear_gelu() on arguments its checks passed (the model backend's: a plain nn.Linear and nn.GELU,
    float operands, a configuration built for the kind), without them."""
    x, weight, bias = linear_operands(x, weight, bias)
    return torch.ops.vitfast.linear_gelu.default(x, weight, bias, approximate, needs_grad(x, weight, bias), config)[0]


@torch.library.register_fake("vitfast::linear_gelu")
def _(x, weight, bias, approximate, save_pre, config="auto"):
    shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape if save_pre else (0,))


@torch.library.register_fake("vitfast::gelu_grad_bias")
def _(dout, pre, approximate, bias_grad):
    return pre.new_empty(pre.shape), pre.new_empty((pre.shape[-1],) if bias_grad else (0,))


# The gradient: csrc/gemm/linear_gelu_autograd.cpp (the Autograd key, in C++: no Python per call):
# gelu_grad_bias (GELU's gradient and the bias gradient in one pass over the saved pre-activation: one
# kernel on a GPU, linear_gelu_backward_kernels.cu), then the linear's products.


def linear_gelu_ref(x, weight, bias=None, approximate="none"):
    """Pure-PyTorch twin: F.gelu(F.linear(x, weight, bias))."""
    return torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias), approximate=approximate)
