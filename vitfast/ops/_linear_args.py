"""Argument checks shared by the matrix-product operators' wrappers (linear_gelu, linear_residual, lp_matmul)."""
import functools

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float_tensor(name, t, optional=False):
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32, float16 or bfloat16 tensor, got {t.dtype}")


def check_linear(x, weight, bias, x_name="x", weight_name="weight"):
    """x (..., K), weight (N, K), bias (N) or None."""
    check_float_tensor(x_name, x)
    check_float_tensor(weight_name, weight)
    check_float_tensor("bias", bias, optional=True)
    if x.dim() < 1:
        raise ValueError(f"{x_name} must have at least one dimension")
    if weight.dim() != 2:
        raise ValueError(f"{weight_name} must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"{weight_name}.shape[1] ({weight.shape[1]}) must equal {x_name}'s last dimension ({x.shape[-1]})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


# linear_gelu's and linear_residual's kernels
SM90_KINDS = ("act", "act_tanh", "act_aux", "act_aux_tanh", "residual", "residual_f32")


def gelu_kind(approximate, aux):
    """linear_gelu's kernel kind (sm90_config.h's sm90_gelu_kind): exact or tanh GELU, the pre-activation
    stored (aux) or not."""
    return ("act_aux" if aux else "act") + ("_tanh" if approximate == "tanh" else "")


@functools.lru_cache(maxsize=None)
def sm90_configs(kind=None):
    """The Hopper GEMM configurations built for a kernel kind (csrc/gemm/sm90_config.h); without one,
    those built for any of linear_gelu's and linear_residual's kinds."""
    if kind is None:
        return tuple(dict.fromkeys(c for k in SM90_KINDS for c in sm90_configs(k)))
    return ("auto", *torch.ops.vitfast.sm90_configs(kind))


def check_config(config, kind, what):
    """`config` names a Hopper GEMM configuration built for `kind` ("act", "act_aux", "residual", ...)."""
    if config == "auto":
        return
    built = sm90_configs(kind)
    if config not in built:
        raise ValueError(f"config must be one of {', '.join(map(repr, built))} for {what}, got {config!r}")


def autocast_dtype(x):
    """The dtype autocast casts matrix products to on x's device, or None when it is off."""
    kind = x.device.type
    if kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def cast(t, dtype):
    """t in dtype, calling .to() only where a cast is due (each call is host time per op)."""
    return t if t.dtype == dtype else t.to(dtype)


def linear_operands(x, weight, bias):
    """(x, weight, bias) in one dtype: autocast's on x's device when it is on (as F.linear's operands
    are cast), else they must already share x's dtype."""
    dtype = autocast_dtype(x)
    if dtype is not None:
        return cast(x, dtype), cast(weight, dtype), None if bias is None else cast(bias, dtype)
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"weight and bias must have x's dtype {x.dtype}, got {weight.dtype} and "
                        f"{None if bias is None else bias.dtype}")
    return x, weight, bias
