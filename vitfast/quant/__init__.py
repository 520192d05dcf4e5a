"""vitfast.quant: exact low-precision number formats, quantizers and low-precision training."""
from ..ops import block_quantize, fixed_point_quantize, float_quantize
from .functional import quantize
from .number import FORMATS, BlockFloatingPoint, FixedPoint, FloatingPoint, as_number
from .optim import OptimLP
from .quantizer import Quantizer, quantizer

__all__ = [
    "FloatingPoint", "FixedPoint", "BlockFloatingPoint", "FORMATS", "as_number",
    "float_quantize", "fixed_point_quantize", "block_quantize", "quantize",
    "Quantizer", "quantizer", "OptimLP",
]
