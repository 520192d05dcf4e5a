"""quantize(x, fmt): one entry point for every number format."""
from ..ops import block_quantize, fixed_point_quantize, float_quantize
from .number import BlockFloatingPoint, FixedPoint, FloatingPoint, as_number

__all__ = ["quantize"]


def quantize(x, fmt, rounding="nearest", generator=None):
    """Quantize x into `fmt`: a FloatingPoint, FixedPoint or BlockFloatingPoint, a qtorch number, or a
    format name ("fp32", "tf32", "bf16", "fp16", "fp8_e5m2", "fp8_e4m3")."""
    n = as_number(fmt)
    if isinstance(n, FloatingPoint):
        return float_quantize(x, n.exp, n.man, rounding, n.saturate, n.subnormals, generator, finite=n.finite)
    if isinstance(n, FixedPoint):
        return fixed_point_quantize(x, n.wl, n.fl, n.clamp, n.symmetric, rounding, generator)
    assert isinstance(n, BlockFloatingPoint)
    return block_quantize(x, n.wl, n.dim, n.block_size, rounding, generator)
