"""Number formats: FloatingPoint, FixedPoint, BlockFloatingPoint and the named formats.

qtorch's number objects (qtorch.FloatingPoint, FixedPoint, BlockFloatingPoint) are accepted
wherever these are; as_number converts them."""
from dataclasses import dataclass
from typing import Optional

from ..ops._quant_args import check_int
from ..ops.fixed_point_quantize import check_fixed_args

__all__ = ["FloatingPoint", "FixedPoint", "BlockFloatingPoint", "FORMATS", "as_number"]


@dataclass(frozen=True)
class FloatingPoint:
    """exp exponent bits (1..8) and man mantissa bits (0..23), IEEE 754 layout; finite=True for the
    OCP "fn" layout without infinities (e4m3fn). See vitfast.ops.float_quantize."""

    exp: int
    man: int
    subnormals: bool = True
    saturate: bool = False
    finite: bool = False

    def __post_init__(self):
        check_int("exp", self.exp, 1, 8)
        check_int("man", self.man, 0, 23)
        if self.finite and self.exp == 8:
            raise ValueError("finite=True needs exp < 8: with exp=8 the format's range exceeds float32")

    def __str__(self):
        return f"FloatingPoint(exp={self.exp}, man={self.man})"


@dataclass(frozen=True)
class FixedPoint:
    """Signed fixed point: wl-bit words with fl fractional bits. See vitfast.ops.fixed_point_quantize."""

    wl: int
    fl: int
    clamp: bool = True
    symmetric: bool = False

    def __post_init__(self):
        check_fixed_args(self.wl, self.fl, self.symmetric)


@dataclass(frozen=True)
class BlockFloatingPoint:
    """wl-bit block floating point sharing an exponent per tensor (dim=None), per slice along dim,
    or per block_size elements along dim. See vitfast.ops.block_quantize."""

    wl: int
    dim: Optional[int] = None
    block_size: Optional[int] = None

    def __post_init__(self):
        check_int("wl", self.wl, 2, 32)
        if self.dim is not None:
            check_int("dim", self.dim, -64, 63)
        if self.block_size is not None:
            check_int("block_size", self.block_size, 1, 2**62)
            if self.dim is None:
                raise ValueError("block_size needs dim: the axis along which its blocks run")


FORMATS = {
    "fp32": FloatingPoint(8, 23),
    "tf32": FloatingPoint(8, 10),
    "bf16": FloatingPoint(8, 7),
    "fp16": FloatingPoint(5, 10),
    "fp8_e5m2": FloatingPoint(5, 2),
    # torch.float8_e4m3fn: max 448, no infinities; its cast saturates overflow and +-inf to +-448.
    "fp8_e4m3": FloatingPoint(4, 3, saturate=True, finite=True),
}

_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
            "e5m2": "fp8_e5m2", "e4m3": "fp8_e4m3", "fp8_e4m3fn": "fp8_e4m3"}


def as_number(fmt, name="fmt"):
    """One of our number types for a number type, a format name, or a qtorch number object."""
    if isinstance(fmt, (FloatingPoint, FixedPoint, BlockFloatingPoint)):
        return fmt
    if isinstance(fmt, str):
        key = fmt.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in FORMATS:
            raise ValueError(f"{name}: unknown format {fmt!r}; named formats are {', '.join(FORMATS)}")
        return FORMATS[key]
    if type(fmt).__module__.split(".")[0] == "qtorch":
        kind = type(fmt).__name__
        if kind == "FloatingPoint":
            return FloatingPoint(fmt.exp, fmt.man)
        if kind == "FixedPoint":
            return FixedPoint(fmt.wl, fmt.fl, clamp=fmt.clamp, symmetric=fmt.symmetric)
        if kind == "BlockFloatingPoint":
            return BlockFloatingPoint(fmt.wl, dim=None if fmt.dim == -1 else fmt.dim)
    raise TypeError(f"{name} must be a FloatingPoint, FixedPoint, BlockFloatingPoint, a qtorch number or one of "
                    f"the names {', '.join(FORMATS)}; got {fmt!r}")
