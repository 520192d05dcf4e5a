"""The pre-norm transformer block, timm's Block: x + ls1(attn(norm1(x))), then the same for the MLP.
Attention, MLP and norm classes are injected, so fused or quantized layers swap in without forking
a model, and its state dict keeps timm's keys."""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .drop import DropPath, LayerScale
from .mlp import Mlp


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

    def forward(self, x, attn_bias=None, return_attn=None):
        """Returns x, or (x, attention logits/probs) when return_attn is "logits"/"probs"."""
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
