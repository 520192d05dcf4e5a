"""scaled_cast: x / scale rounded to nearest (ties to even), saturated and stored in an 8-bit format,
in one pass: the quantization step in front of a real FP8 (torch._scaled_mm) or INT8 (torch._int_mm)
matrix product.

Kernels: csrc/quant/scaled_cast.h (per element, shared by both devices), scaled_cast_cpu.cpp and
scaled_cast_cuda.cu (CUDA entry: quantize_cuda.cpp).

    dtype                 values of x / scale become          NaN       +-inf, overflow
    torch.float8_e4m3fn   the nearest e4m3fn number            NaN       +-448
    torch.float8_e5m2     the nearest e5m2 number              NaN       +-57344
    torch.int8            the nearest integer in -127..127     0         +-127

The division is an IEEE fp32 division (x is read as fp32), and the rounding is float_quantize's /
fixed_point_quantize's, so the code's value equals the emulation's quantize(x / scale) bit for bit
(vitfast.quant.scaled). `scale` is an fp32 tensor on x's device holding one value (per tensor) or
x.size(0) values (one per slice along dim 0: a weight's output channels); it is read by the kernel,
so a scale computed on the GPU (a dynamic one, from the batch's absolute maximum) costs no host
synchronisation.
"""
import torch

from ._quant_args import check_tensor

__all__ = ["scaled_cast", "scaled_cast_ref", "CAST8_DTYPES"]

# dtype -> (qmax, the float_quantize format (exp, man, finite) or None for int8)
CAST8_DTYPES = {
    torch.float8_e4m3fn: (448.0, (4, 3, True)),
    torch.float8_e5m2: (57344.0, (5, 2, False)),
    torch.int8: (127.0, None),
}


def _check(x, scale, dtype):
    check_tensor(x)
    if dtype not in CAST8_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, CAST8_DTYPES))}, got {dtype}")
    if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32:
        got = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise TypeError(f"scale must be a float32 tensor, got {got}")
    if scale.device != x.device:
        raise ValueError(f"scale must be on x's device ({x.device}), got {scale.device}")
    if scale.numel() != 1 and (x.dim() == 0 or scale.numel() != x.shape[0]):
        raise ValueError(f"scale must hold 1 value or x.size(0) values (one per row), got {scale.numel()} "
                         f"for x of shape {tuple(x.shape)}")


def scaled_cast(x, scale, dtype):
    """x / scale in `dtype` (torch.float8_e4m3fn, float8_e5m2 or int8): rounded to nearest even and
    saturated; x's shape, contiguous. See the module docstring for NaN, inf and `scale`."""
    _check(x, scale, dtype)
    return torch.ops.vitfast.scaled_cast.default(x, scale, dtype)


@torch.library.register_fake("vitfast::scaled_cast")
def _(x, scale, dtype):
    return x.new_empty(x.shape, dtype=dtype)


def scaled_cast_ref(x, scale, dtype):
    """Pure-PyTorch twin of scaled_cast: fp32 division, float_quantize_ref / round-and-clamp, then a
    cast of the (exactly representable) result."""
    from .float_quantize import float_quantize_ref

    _check(x, scale, dtype)
    s = scale.reshape(()) if scale.numel() == 1 else scale.reshape(-1, *([1] * (x.dim() - 1)))
    v = x.float() / s
    spec = CAST8_DTYPES[dtype][1]
    if spec is None:
        q = torch.nan_to_num(torch.round(v), nan=0.0).clamp(-127, 127)
    else:
        exp, man, finite = spec
        q = float_quantize_ref(v, exp, man, saturate=True, finite=finite)
    return q.to(dtype)
