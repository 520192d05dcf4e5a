"""Multi-head self-attention with timm's module and parameter names (qkv, q_norm, k_norm, attn_drop,
norm, proj, proj_drop), an optional additive logit bias and optional attention maps."""
import torch.nn.functional as F
from torch import nn

from ..ops._grad import needs_grad
from ..ops.attention import _attention, support
from . import backend as backends
from ..kernels.dispatch import use_kernel

RETURN_ATTN = (None, "logits", "probs")


def split_heads(projection, parts, num_heads):
    """The `parts` (B, H, N, d) operands (q, k, v; or q, k) in one fused projection's output (B, N,
    parts * H * d), as strided views. Split before the heads are transposed (timm permutes first): the
    gradient then comes back as one stack straight into the projection's (B, N, parts, H, d) layout,
    where a permute-first split leaves it in a transposed stack that the backward copies again (one
    copy of the projection's output per block)."""
    B, N, _ = projection.shape
    return tuple(t.transpose(1, 2) for t in projection.reshape(B, N, parts, num_heads, -1).unbind(2))


def attention_core(q, k, v, scale, bias=None, dropout_p=0.0, backend="sdpa", return_attn=None, act_quant=None):
    """softmax(q kᵀ · scale + bias) v on (B, H, N, d); with return_attn also the (B, H, N, N) logits
    or probabilities (which needs the explicit matrix, so it runs the eager path). act_quant (a
    tensor -> tensor rounding, set by vitfast.quant.prepare_qat) rounds q, k, v, the logits, the
    probabilities and the output: the whole attention core in the low-precision format.
    backend "vitfast" runs vitfast.ops.attention (logits too) and falls back to SDPA/eager, saying so
    once, for what it does not fuse: attention dropout, return_attn="probs", unsupported inputs; on a
    GPU it runs SDPA, silently, where SDPA measured faster there (vitfast.kernels.dispatch). Its output
    is a (B, H, N, d) view of (B, N, H, d) memory, so the caller's transpose(1, 2).reshape(B, N, C)
    for the output projection is free (SDPA's output needs a copy there)."""
    if act_quant is not None:
        q, k, v = act_quant(q), act_quant(k), act_quant(v)
        backend = "eager"
    else:
        act_quant = _identity
    if backend == "vitfast":
        # where the data says SDPA is faster, nothing else needs asking (each question is host time)
        if return_attn == "logits" or use_kernel("attention", q, H=q.shape[1], N=q.shape[-2], d=q.shape[-1],
                                                 bias=bias is not None, grad=needs_grad(q, k, v, bias)):
            reason, bias4 = support(q, k, v, bias, dropout_p, return_attn)
            if reason is None:
                if return_attn == "logits":  # no library op returns them: ours, or the explicit matrix
                    out, logits = _attention(q, k, v, bias4, scale, return_logits=True, out_layout="bnhd")
                    return out.transpose(1, 2), logits
                return _attention(q, k, v, bias4, scale, out_layout="bnhd").transpose(1, 2), None
            backends.fallback_once("attention", reason)
        backend = "sdpa"
    if backend == "sdpa" and return_attn is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale), None
    logits = act_quant((q * scale) @ k.transpose(-2, -1))
    if bias is not None:
        logits = act_quant(logits + bias)
    probs = act_quant(logits.softmax(dim=-1))
    attn = {"logits": logits, "probs": probs}.get(return_attn)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return act_quant(probs @ v), attn


def _identity(x):
    return x


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False, proj_bias=True, attn_drop=0.0,
                 proj_drop=0.0, norm_layer=nn.LayerNorm, backend=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.backend = backend
        self.act_quant = None  # set by vitfast.quant.prepare_qat
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, attn_bias=None, return_attn=None):
        """x: (B, N, C). attn_bias: additive logits broadcastable to (B, H, N, N). return_attn: None,
        "logits" or "probs"; when given, returns (out, attn)."""
        if return_attn not in RETURN_ATTN:
            raise ValueError(f"return_attn must be one of {RETURN_ATTN}, got {return_attn!r}")
        B, N, C = x.shape
        q, k, v = split_heads(self.qkv(x), 3, self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        out, attn = attention_core(q, k, v, self.scale, attn_bias, self.attn_drop.p if self.training else 0.0,
                                   backends.resolve(self.backend), return_attn, self.act_quant)
        out = self.proj_drop(self.proj(self.norm(out.transpose(1, 2).reshape(B, N, C))))
        return (out, attn) if return_attn else out
