"""vitfast's operators: each a thin wrapper over torch.ops.vitfast.*, with its shape function
(register_fake) and a pure-PyTorch *_ref twin beside it; its gradient is registered for the Autograd key
in C++ (csrc/*/*_autograd.cpp: no Python per call)."""
from .attention import attention, attention_ref, attention_support
from .block_quantize import block_quantize, block_quantize_ref
from .fp8_linear import fp8_linear, fp8_linear_ref
from .fixed_point_quantize import fixed_point_quantize, fixed_point_quantize_ref
from .float_quantize import float_quantize, float_quantize_ref
from .layer_norm import layer_norm, layer_norm_ref
from .layer_norm_fp8 import layer_norm_fp8, layer_norm_fp8_ref
from .linear_gelu import linear_gelu, linear_gelu_ref
from .linear_residual import linear_residual, linear_residual_ref
from .lp_matmul import lp_linear, lp_matmul, lp_matmul_ref
from .scaled_cast import scaled_cast, scaled_cast_ref

__all__ = [
    "attention", "attention_ref", "attention_support",
    "block_quantize", "block_quantize_ref",
    "fixed_point_quantize", "fixed_point_quantize_ref",
    "fp8_linear", "fp8_linear_ref",
    "float_quantize", "float_quantize_ref",
    "layer_norm", "layer_norm_ref",
    "layer_norm_fp8", "layer_norm_fp8_ref",
    "linear_gelu", "linear_gelu_ref",
    "linear_residual", "linear_residual_ref",
    "lp_linear", "lp_matmul", "lp_matmul_ref",
    "scaled_cast", "scaled_cast_ref",
]
