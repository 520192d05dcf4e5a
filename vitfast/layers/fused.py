"""When the "vitfast" backend may run a piece of a block through the fused operators, and the fused
pieces themselves. Each check is per piece: anything that the fused op does not compute (LayerScale,
active drop path or dropout, a QAT rounding hook, a subclassed or quantizing layer, a norm inside the
MLP or after attention) sends that piece back to the module's own forward, so the eager path and the
state dict are untouched. On a GPU, a piece the fused op could compute still runs the library path
where that measured faster on this GPU kind (vitfast.kernels.dispatch)."""
import warnings

import torch
from torch import nn

from ..ops._linear_args import FLOAT_DTYPES, autocast_dtype, gelu_kind, sm90_configs
from ..ops.layer_norm import _layer_norm
from ..ops.linear_gelu import _linear_gelu
from ..ops.linear_residual import _linear_residual
from . import backend as backends
from .attention import Attention, attention_core, split_heads
from ..ops._grad import needs_grad
from ..kernels.dispatch import kernel_config, use_kernel


def plain_linear(m):
    return type(m) is nn.Linear


def plain_layer_norm(m):
    """An nn.LayerNorm over one dimension (a multiple of 8) with weight and bias."""
    return (type(m) is nn.LayerNorm and m.weight is not None and m.bias is not None and len(m.normalized_shape) == 1
            and m.normalized_shape[0] % 8 == 0)


def inactive(m, training):
    """A module that returns its input: Identity, or dropout / drop path that is off."""
    if isinstance(m, nn.Identity):
        return True
    p = getattr(m, "p", getattr(m, "drop_prob", None))
    return p is not None and (p == 0 or not training) and type(m).__name__ in ("Dropout", "DropPath")


def fused_norm(m, x, residual=None):
    """Whether layer_norm (with the residual add, if given) runs m on x: a plain LayerNorm, a dtype the
    op takes, and our kernel measured faster on this GPU."""
    return (plain_layer_norm(m) and x.dtype in FLOAT_DTYPES
            and use_kernel("layer_norm", x, D=x.shape[-1], residual=residual is not None,
                           grad=needs_grad(x, residual, m.weight)))


def norm(m, x):
    """m(x), through the fused layer_norm where fused_norm says so."""
    return _layer_norm(x, m.weight, m.bias, m.eps) if fused_norm(m, x) else m(x)


def norm_residual(m, y, residual):
    """(residual + y, m of it) through layer_norm's fused add; fused_norm(m, y, residual) said so."""
    return _layer_norm(y, m.weight, m.bias, m.eps, residual=residual)


_stale = set()  # configurations named by dispatch data that this build does not have, warned once each


def fused_linear(op, linear, x, residual=None, approximate="none"):
    """The Hopper configuration to run `op` ("linear_gelu", "linear_residual") with for nn.Linear
    `linear` on x, in the dtype the product runs in (autocast's, when on: x may be the fp32 residual
    stream), with GELU's `approximate` for linear_gelu; None where the library path measured faster or
    x has a dtype the op does not take."""
    if x.dtype not in FLOAT_DTYPES:
        return None
    grad = needs_grad(x, linear.weight)
    config = kernel_config(op, x, autocast_dtype(x), K=linear.in_features, N=linear.out_features, grad=grad)
    if config in (None, "auto"):
        return config
    kind = (("residual_f32" if residual.dtype == torch.float32 else "residual") if op == "linear_residual"
            else gelu_kind(approximate, grad))
    if config in sm90_configs(kind):
        return config
    # A configuration not built for this kind (the row was measured with a bf16 residual, this one is
    # float32, say) takes the shape's default quietly; one this build lacks altogether is stale data.
    if config not in sm90_configs() and config not in _stale:
        _stale.add(config)
        warnings.warn(f"vitfast: the dispatch data names the GEMM configuration {config!r}, which this build does "
                      f"not have; using the shape's default", stacklevel=2)
    return "auto"


def residual_linear(linear, x, residual):
    """residual + linear(x): bias and residual in linear_residual's epilogue, or the library's two ops."""
    config = fused_linear("linear_residual", linear, x, residual)
    if config is not None:
        return _linear_residual(x, linear.weight, linear.bias, residual, config)
    return residual + linear(x)


def attention_fusable(attn):
    """Attention whose output projection can take the residual add in its epilogue."""
    return (type(attn) is Attention and attn.act_quant is None and isinstance(attn.norm, nn.Identity)
            and plain_linear(attn.proj) and inactive(attn.proj_drop, attn.training))


def attention_residual(attn, h, residual, attn_bias=None, config="auto"):
    """residual + attn(h), the projection's bias and the residual add fused (linear_residual). The lines
    before the projection are Attention.forward's, unchanged."""
    B, N, C = h.shape
    q, k, v = split_heads(attn.qkv(h), 3, attn.num_heads)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out, _ = attention_core(q, k, v, attn.scale, attn_bias, attn.attn_drop.p if attn.training else 0.0,
                            backends.resolve(attn.backend), None, None)
    return _linear_residual(out.transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias, residual,
                            config)


def mlp_hidden(mlp, h):
    """GELU(fc1(h)): linear_gelu, or the library's two ops where those measured faster."""
    config = fused_linear("linear_gelu", mlp.fc1, h, approximate=mlp.act.approximate)
    if config is not None:
        return _linear_gelu(h, mlp.fc1.weight, mlp.fc1.bias, mlp.act.approximate, config)
    return mlp.act(mlp.fc1(h))


def mlp_residual(mlp, h, residual):
    """residual + mlp(h): fc1 + bias + GELU in one op, fc2 + bias + residual in another."""
    return residual_linear(mlp.fc2, mlp_hidden(mlp, h), residual)
