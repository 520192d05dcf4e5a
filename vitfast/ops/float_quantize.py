"""float_quantize: rounding into a floating-point format FloatingPoint(exp, man).

Kernels: csrc/quant/float_quantize_cpu.cpp and _cuda.cu (scalar code in csrc/quant/rounding.h;
CUDA entry: quantize_cuda.cpp).
The format follows IEEE 754: bias 2^(exp-1) - 1, subnormals, the top exponent reserved for inf and
NaN, so (5, 10), (8, 7) and (5, 2) agree bit for bit with torch's fp16, bf16 and fp8_e5m2 casts.
finite=True gives the OCP "fn" layout instead (e4m3fn): no infinities, the top binade holds numbers,
only its all-ones mantissa is NaN.
"""
import torch

from ._quant_args import check_int, check_rounding, check_tensor, draw_seed, register_quantizer
from .philox import random_words

__all__ = ["float_quantize", "float_quantize_ref", "float_format_limits"]


def float_quantize(x, exp, man, rounding="nearest", saturate=False, subnormals=True, generator=None, *,
                   finite=False):
    """Round x to the nearest value of FloatingPoint(exp, man); returns x's dtype and shape (contiguous).

    rounding: "nearest" (IEEE round to nearest, ties to the neighbour whose encoding is even), "stochastic" (rounds up with
    probability equal to the discarded fraction; reproducible under torch.manual_seed or `generator`,
    identical on CPU and CUDA) or "nearest_away" (ties away from zero, qtorch 0.3.0's "nearest").
    saturate: overflow and +-inf give +-max finite instead of +-inf (NaN for finite formats).
    subnormals=False: results below the smallest normal flush to +-0 (after rounding, like FTZ).
    NaN stays NaN. fp16/bf16 inputs are rounded exactly; the result is then stored in x's dtype.
    """
    check_tensor(x)
    check_int("exp", exp, 1, 8)
    check_int("man", man, 0, 23)
    check_rounding(rounding)
    if finite and exp == 8:
        raise ValueError("finite=True needs exp < 8: with exp=8 the format's range exceeds float32")
    return torch.ops.vitfast.float_quantize.default(
        x, exp, man, rounding, bool(saturate), bool(subnormals), bool(finite), draw_seed(rounding, generator))


register_quantizer("vitfast::float_quantize")


def float_format_limits(exp, man, finite=False):
    """(smallest normal exponent, largest finite value) of FloatingPoint(exp, man)."""
    bias = 2 ** (exp - 1) - 1
    emin, top = 1 - bias, 2**exp - 1 - bias
    emax, max_mant = top - 1, 2**man - 1
    if finite and man > 0:
        emax, max_mant = top, 2**man - 2
    if emax >= emin:
        return emin, (1 + max_mant / 2**man) * 2.0**emax
    return emin, (2**man - 1) * 2.0 ** (emin - man)  # exp == 1: only subnormals


def float_quantize_ref(x, exp, man, rounding="nearest", saturate=False, subnormals=True, seed=None, *,
                       finite=False):
    """Pure-PyTorch twin of float_quantize, written with float64 arithmetic (value / step, rounded)
    rather than bit manipulation. For "stochastic" pass the same `seed` tensor the op received."""
    v = x.detach().double()
    a = v.abs()
    emin, max_value = float_format_limits(exp, man, finite)
    _, e2 = torch.frexp(a)
    e = torch.clamp(e2.double() - 1, min=emin)  # the binade of a, never below the subnormal one
    step = torch.exp2(e - man)
    t = a / step
    if rounding == "nearest":
        q = torch.round(t)  # half to even
        if man == 0:  # no mantissa bit: the tie 1.5 goes to the binade whose exponent field is even
            bias = 2 ** (exp - 1) - 1
            q = torch.where(t == 1.5, 2.0 - ((e + bias) % 2 == 0).double(), q)
    elif rounding == "nearest_away":
        q = torch.floor(t + 0.5)
    else:
        # The kernel draws u from the low k = min(shift, 32) bits of its word, shift being the number
        # of fp32 bits below the step, and rounds up iff u >= 2^k - floor(frac * 2^k).
        e32 = torch.clamp(e2.double() - 1, min=-126)
        shift = (e - man) - (e32 - 23)
        k = torch.clamp(shift, max=32)
        words = random_words(x.numel(), seed).reshape(x.shape).double()
        u = torch.remainder(words, torch.exp2(k))
        frac_k = torch.floor((t - torch.floor(t)) * torch.exp2(k))
        q = torch.floor(t) + (u >= torch.exp2(k) - frac_k).double() * (frac_k > 0).double()
    r = q * step
    over = r > max_value
    if saturate:
        r = torch.where(over | torch.isinf(a), torch.full_like(r, max_value), r)
    else:
        r = torch.where(over | torch.isinf(a), torch.full_like(r, float("nan") if finite else float("inf")), r)
    if not subnormals:
        r = torch.where(r < 2.0**emin, torch.zeros_like(r), r)
    r = torch.where(torch.isnan(v), v, torch.copysign(r, v))
    return r.to(x.dtype)
