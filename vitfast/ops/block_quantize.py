"""block_quantize: block floating point, BlockFloatingPoint(wl, dim, block_size).

Kernels: csrc/quant/block_quantize_cpu.cpp and _cuda.cu (CUDA entry: quantize_cuda.cpp). Each group
of elements shares the exponent E = floor(log2(max |x|)) of its largest finite magnitude; its values
are k * 2^(E + 2 - wl) with
|k| <= 2^(wl-1) - 1 (qtorch's layout). Groups: the whole tensor (dim=None), each slice x.select(dim, i)
(qtorch's dim), or each run of block_size consecutive elements along dim (MX-style blocks).
"""
import torch

from ._quant_args import check_int, check_rounding, check_tensor, draw_seed, register_quantizer
from .fixed_point_quantize import round_scaled_ref

__all__ = ["block_quantize", "block_quantize_ref"]


def check_block_args(x, wl, dim, block_size):
    check_int("wl", wl, 2, 32)
    if dim is not None:
        check_int("dim", dim, -max(x.dim(), 1), max(x.dim(), 1) - 1)
    if block_size is not None:
        check_int("block_size", block_size, 1, 2**62)
        if dim is None:
            raise ValueError("block_size needs dim: the axis along which its blocks run")


def block_quantize(x, wl, dim=None, block_size=None, rounding="nearest", generator=None):
    """Quantize x to wl-bit block floating point. An all-zero group stays zero (no 0/0 scale);
    +-inf and NaN pass through unchanged and do not set their group's exponent."""
    check_tensor(x)
    check_block_args(x, wl, dim, block_size)
    check_rounding(rounding)
    return torch.ops.vitfast.block_quantize.default(x, wl, dim, block_size, rounding, draw_seed(rounding, generator))


register_quantizer("vitfast::block_quantize")


def block_maxima_ref(x, dim=None, block_size=None):
    """max |x| over each group's finite elements, broadcast back to x's shape (float64)."""
    a = torch.where(torch.isfinite(x), x.abs(), torch.zeros_like(x)).double()
    if dim is None:
        return a.amax().expand(x.shape)
    if x.dim() == 0:
        return a
    if block_size is None:
        others = [d for d in range(x.dim()) if d != dim % x.dim()]
        return a.amax(dim=others, keepdim=True).expand(x.shape) if others else a
    moved = a.movedim(dim, -1)
    n = moved.shape[-1]
    blocks = -(-n // block_size)
    padded = torch.nn.functional.pad(moved, (0, blocks * block_size - n))
    m = padded.reshape(*moved.shape[:-1], blocks, block_size).amax(-1, keepdim=True)
    m = m.expand(*moved.shape[:-1], blocks, block_size).reshape(*moved.shape[:-1], blocks * block_size)[..., :n]
    return m.movedim(-1, dim)


def block_quantize_ref(x, wl, dim=None, block_size=None, rounding="nearest", seed=None):
    """Pure-PyTorch twin of block_quantize (float64 arithmetic)."""
    v = x.detach().double()
    m = block_maxima_ref(x.detach(), dim, block_size)
    _, e2 = torch.frexp(m)
    step = torch.exp2(e2.double() - 1 + 2 - wl)
    kmax = 2.0 ** (wl - 1) - 1
    q = round_scaled_ref(v / step, rounding, seed, x.numel()).clamp(-kmax, kmax)
    out = torch.where(torch.isfinite(v) & (m > 0), (q + 0.0) * step, v)  # + 0.0: no -0 mantissa
    return out.to(x.dtype)
