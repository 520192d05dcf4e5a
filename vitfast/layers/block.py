"""The pre-norm transformer block, timm's Block: x + ls1(attn(norm1(x))), then the same for the MLP.
Attention, MLP and norm classes are injected, so fused or quantized layers swap in without forking
a model, and its state dict keeps timm's keys.

With the "vitfast" backend (and no act_quant hook, no return_attn) the block runs through the fused
operators piece by piece (vitfast.layers.fused): norm1 as layer_norm; attention's projection + bias +
residual add as linear_residual; norm2 as layer_norm, or fused with the residual add when the
projection could not take it; fc1 + GELU as linear_gelu; fc2 + bias + residual add as linear_residual.
A piece the fused ops do not cover (LayerScale, active drop path, ...) runs its eager form, and on a
GPU a piece whose library path measured faster there runs that (vitfast.kernels.dispatch)."""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import backend as backends
from . import fused
from .attention import Attention
from .drop import DropPath, LayerScale
from .mlp import Mlp, mlp_fusable


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_norm=False, proj_drop=0.0, attn_drop=0.0,
                 init_values=None, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, mlp_layer=Mlp,
                 attn_layer=Attention, backend=None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop,
                               proj_drop=proj_drop, norm_layer=norm_layer, backend=backend)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.act_quant = None  # rounds the residual sums; set by vitfast.quant.prepare_qat
        self.backend = backend  # None: the global backend (vitfast.layers.backend)

    def _fused(self, return_attn):
        return return_attn is None and self.act_quant is None and backends.resolve(self.backend) == "vitfast"

    def _attn_part(self, x, attn_bias, fuse_norm2=True):
        """(x + drop_path1(ls1(attn(norm1(x)))), norm2 of it or None), fused where vitfast.layers.fused
        allows; norm2 is returned only when it was fused with the residual add (fuse_norm2)."""
        h = fused.norm(self.norm1, x)
        plain = fused.inactive(self.drop_path1, self.training) and isinstance(self.ls1, nn.Identity)
        config = None
        if plain and fused.attention_fusable(self.attn):
            config = fused.fused_linear("linear_residual", self.attn.proj, h, residual=x)
        if config is not None:
            return fused.attention_residual(self.attn, h, x, attn_bias, config), None
        y = self.attn(h, attn_bias=attn_bias)
        if plain and fuse_norm2 and fused.fused_norm(self.norm2, y, residual=x):
            return fused.norm_residual(self.norm2, y, x)
        return x + self.drop_path1(self.ls1(y)), None

    def _mlp_part(self, x, h):
        """x + drop_path2(ls2(mlp(h))) for the normalised h, fused where vitfast.layers.fused allows."""
        if (fused.inactive(self.drop_path2, self.training) and isinstance(self.ls2, nn.Identity)
                and mlp_fusable(self.mlp)):
            return fused.mlp_residual(self.mlp, h, x)
        return x + self.drop_path2(self.ls2(self.mlp(h)))

    def forward(self, x, attn_bias=None, return_attn=None):
        """Returns x, or (x, attention logits/probs) when return_attn is "logits"/"probs"."""
        if self._fused(return_attn):
            x, h = self._attn_part(x, attn_bias)
            return self._mlp_part(x, fused.norm(self.norm2, x) if h is None else h)
        y = self.attn(self.norm1(x), attn_bias=attn_bias, return_attn=return_attn)
        y, attn = y if return_attn else (y, None)
        q = self.act_quant or _identity
        x = q(x + self.drop_path1(self.ls1(y)))
        x = q(x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))
        return (x, attn) if return_attn else x


def _identity(x):
    return x


def set_grad_checkpointing(model, enable=True):
    """Activation checkpointing: every block of `model` (each member of a `blocks` container, in every
    stage of a multi-stage model) keeps only its input and recomputes its activations during the
    backward pass, trading one extra block forward for the memory of its activations. Random draws
    (dropout, drop path) are replayed, so gradients equal the plain model's. Returns the model."""
    for module in model.modules():
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, (nn.ModuleList, nn.Sequential)):
            for blk in blocks:
                blk.grad_checkpointing = bool(enable)
    return model


def run_block(blk, *args, **kwargs):
    """blk(*args, **kwargs), checkpointed when set_grad_checkpointing marked it and gradients are on."""
    if getattr(blk, "grad_checkpointing", False) and torch.is_grad_enabled():
        return checkpoint(blk, *args, use_reentrant=False, **kwargs)
    return blk(*args, **kwargs)


def run_blocks(blocks, x, return_attn=None, before=None):
    """x through every block; with return_attn ("logits" | "probs") also each block's attention, from
    the same pass. before(i, x) -> x, if given, runs ahead of block i. Returns (x, attentions)."""
    attns = []
    for i, blk in enumerate(blocks):
        if before is not None:
            x = before(i, x)
        if return_attn:
            x, a = run_block(blk, x, return_attn=return_attn)
            attns.append(a)
        else:
            x = run_block(blk, x)
    return x, attns
