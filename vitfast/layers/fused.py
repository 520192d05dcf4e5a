"""When the "vitfast" backend may run a piece of a block through the fused operators, and the fused
pieces themselves. Each check is per piece: anything that the fused op does not compute (LayerScale,
active drop path or dropout, a QAT rounding hook, a subclassed or quantizing layer, a norm inside the
MLP or after attention) sends that piece back to the module's own forward, so the eager path and the
state dict are untouched."""
from torch import nn

from ..ops import layer_norm, linear_gelu, linear_residual
from . import backend as backends
from .attention import Attention, attention_core


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


def norm(m, x):
    """m(x) through the fused layer_norm when m is a plain LayerNorm."""
    return layer_norm(x, m.weight, m.bias, m.eps) if plain_layer_norm(m) else m(x)


def attention_fusable(attn):
    """Attention whose output projection can take the residual add in its epilogue."""
    return (type(attn) is Attention and attn.act_quant is None and isinstance(attn.norm, nn.Identity)
            and plain_linear(attn.proj) and inactive(attn.proj_drop, attn.training))


def attention_residual(attn, h, residual, attn_bias=None):
    """residual + attn(h), the projection's bias and the residual add fused (linear_residual). The lines
    before the projection are Attention.forward's, unchanged."""
    B, N, C = h.shape
    q, k, v = attn.qkv(h).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out, _ = attention_core(q, k, v, attn.scale, attn_bias, attn.attn_drop.p if attn.training else 0.0,
                            backends.resolve(attn.backend), None, None)
    return linear_residual(out.transpose(1, 2).reshape(B, N, C), attn.proj.weight, attn.proj.bias, residual)


def mlp_fusable(mlp):
    """An Mlp whose fc1 + GELU and fc2 (+ residual) can run fused."""
    from .mlp import Mlp

    return (type(mlp) is Mlp and mlp.act_quant is None and type(mlp.act) is nn.GELU and plain_linear(mlp.fc1)
            and plain_linear(mlp.fc2) and isinstance(mlp.norm, nn.Identity) and inactive(mlp.drop1, mlp.training)
            and inactive(mlp.drop2, mlp.training))


def mlp_hidden(mlp, h):
    return linear_gelu(h, mlp.fc1.weight, mlp.fc1.bias, mlp.act.approximate)


def mlp_residual(mlp, h, residual):
    """residual + mlp(h): fc1 + bias + GELU in one op, fc2 + bias + residual in another."""
    return linear_residual(mlp_hidden(mlp, h), mlp.fc2.weight, mlp.fc2.bias, residual)
