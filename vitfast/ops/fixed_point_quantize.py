"""fixed_point_quantize: rounding into a signed fixed-point word FixedPoint(wl, fl).

Kernels: csrc/quant/fixed_point_quantize_cpu.cpp and _cuda.cu (CUDA entry: quantize_cuda.cpp). The
value k * 2^-fl has an integer k in [-2^(wl-1), 2^(wl-1) - 1] (symmetric: [-(2^(wl-1) - 1),
2^(wl-1) - 1]). Every step is exact in float64; the one rounding into x's dtype comes last (exact
for float32 whenever wl <= 24).
"""
import torch

from ._quant_args import check_int, check_rounding, check_tensor, draw_seed, register_quantizer
from .philox import random_words

__all__ = ["fixed_point_quantize", "fixed_point_quantize_ref"]


def check_fixed_args(wl, fl, symmetric):
    check_int("wl", wl, 1, 53)
    check_int("fl", fl, -256, 256)
    if symmetric and wl < 2:
        raise ValueError(f"symmetric fixed point needs wl >= 2 (wl=1 leaves only zero), got wl={wl}")


def fixed_point_quantize(x, wl, fl, clamp=True, symmetric=False, rounding="nearest", generator=None):
    """Round x to a multiple of 2^-fl ("nearest": ties to even; "nearest_away"; "stochastic") and,
    with clamp=True, clamp it to the word's range; clamp=False leaves the range open (qtorch's
    meaning). NaN stays NaN; +-inf clamps to the range ends (or stays, with clamp=False); zero is +0."""
    check_tensor(x)
    check_fixed_args(wl, fl, symmetric)
    check_rounding(rounding)
    return torch.ops.vitfast.fixed_point_quantize.default(
        x, wl, fl, bool(clamp), bool(symmetric), rounding, draw_seed(rounding, generator))


register_quantizer("vitfast::fixed_point_quantize")


def round_scaled_ref(t, rounding, seed, numel):
    """Round float64 values t to integers the way the kernels do (rounding.h: round_to_int)."""
    if rounding == "nearest":
        return torch.round(t)
    if rounding == "nearest_away":
        return torch.sign(t) * torch.floor(t.abs() + 0.5)
    words = random_words(numel, seed).reshape(t.shape).double()
    f = torch.floor(t)
    frac32 = torch.floor((t - f) * 2.0**32)
    return f + (words + frac32 >= 2.0**32).double()


def fixed_point_quantize_ref(x, wl, fl, clamp=True, symmetric=False, rounding="nearest", seed=None):
    """Pure-PyTorch twin of fixed_point_quantize (float64 arithmetic)."""
    t = x.detach().double() * 2.0**fl
    q = round_scaled_ref(t, rounding, seed, x.numel())
    if clamp:
        hi = 2.0 ** (wl - 1) - 1
        lo = -hi if symmetric else -(2.0 ** (wl - 1))
        q = torch.where(torch.isnan(q), q, q.clamp(lo, hi))
    return ((q + 0.0) * 2.0**-fl).to(x.dtype)  # + 0.0: an integer word has no -0
