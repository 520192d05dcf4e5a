"""Straight-through quantization for training: forward rounds the value, backward rounds the
incoming gradient (qtorch's Quantizer semantics)."""
import torch

from ..ops._quant_args import check_rounding
from .functional import quantize
from .number import as_number

__all__ = ["Quantizer", "quantizer"]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(x, forward_format, backward_format, forward_rounding, backward_rounding):
        return x.clone() if forward_format is None else quantize(x, forward_format, forward_rounding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.backward_format, ctx.backward_rounding = inputs[2], inputs[4]

    @staticmethod
    def backward(ctx, grad):
        if ctx.backward_format is not None:
            grad = quantize(grad, ctx.backward_format, ctx.backward_rounding)
        return grad, None, None, None, None


def quantizer(forward_format=None, backward_format=None, forward_rounding="nearest", backward_rounding="nearest"):
    """A function x -> quantized x with a straight-through gradient; formats as in quantize(), None
    leaves that direction alone."""
    fwd = None if forward_format is None else as_number(forward_format, "forward_format")
    bwd = None if backward_format is None else as_number(backward_format, "backward_format")
    check_rounding(forward_rounding, "forward_rounding")
    check_rounding(backward_rounding, "backward_rounding")

    def apply(x):
        return _StraightThrough.apply(x, fwd, bwd, forward_rounding, backward_rounding)

    return apply


class Quantizer(torch.nn.Module):
    """nn.Module form of quantizer(): drop it between layers for quantization-aware training."""

    def __init__(self, forward_format=None, backward_format=None, forward_rounding="nearest",
                 backward_rounding="nearest"):
        super().__init__()
        self.forward_format = None if forward_format is None else as_number(forward_format, "forward_format")
        self.backward_format = None if backward_format is None else as_number(backward_format, "backward_format")
        self.forward_rounding, self.backward_rounding = forward_rounding, backward_rounding
        self._fn = quantizer(self.forward_format, self.backward_format, forward_rounding, backward_rounding)

    def forward(self, x):
        return self._fn(x)

    def extra_repr(self):
        return (f"forward={self.forward_format} ({self.forward_rounding}), "
                f"backward={self.backward_format} ({self.backward_rounding})")
