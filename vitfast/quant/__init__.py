"""vitfast.quant: exact low-precision number formats, quantizers and low-precision training."""
from ..ops import block_quantize, fixed_point_quantize, float_quantize
from .functional import quantize
from .number import FORMATS, BlockFloatingPoint, FixedPoint, FloatingPoint, as_number
from .optim import OptimLP
from .qat import QATModule, is_quantized, model_size_bytes, prepare_qat, strip_qat
from .ptq import convert_ptq
from .lowp import route_lowp, unroute_lowp
from .linear8 import Linear8, quantized_paths
from .fp8_chain import FP8Block, convert_fp8
from .saved import load_quantized, save_quantized
from .quantizer import Quantizer, quantizer
from .recipes import RECIPES, Recipe, parse_format, parse_recipe

__all__ = [
    "FloatingPoint", "FixedPoint", "BlockFloatingPoint", "FORMATS", "as_number",
    "float_quantize", "fixed_point_quantize", "block_quantize", "quantize",
    "Quantizer", "quantizer", "OptimLP",
    "prepare_qat", "strip_qat", "is_quantized", "convert_ptq", "model_size_bytes", "QATModule",
    "route_lowp", "unroute_lowp",
    "Linear8", "quantized_paths", "save_quantized", "load_quantized", "convert_fp8", "FP8Block",
    "Recipe", "RECIPES", "parse_recipe", "parse_format",
]
