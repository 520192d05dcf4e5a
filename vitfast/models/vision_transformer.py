"""Vision Transformer (Dosovitskiy et al. 2020) with timm's configurations and parameter names, so timm
checkpoints load unchanged (strict) and ours load into timm."""
from functools import partial

import torch
from torch import nn

from ..layers.init import init_linear_norm
from ..layers import Attention, Block, Mlp, PatchEmbed, resample_abs_pos_embed, run_blocks
from .registry import INCEPTION_MEAN, INCEPTION_STD, model_config, register_variant

__all__ = ["VisionTransformer", "checkpoint_filter_fn"]


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token", embed_dim=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, qk_norm=False, init_values=None,
                 class_token=True, no_embed_class=False, pre_norm=False, fc_norm=None, drop_rate=0.0,
                 pos_drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, embed_layer=PatchEmbed,
                 norm_layer=None, act_layer=None, block_fn=Block, mlp_layer=Mlp, attn_layer=Attention, backend=None,
                 norm_eps=1e-6):
        super().__init__()
        if global_pool not in ("", "avg", "token"):
            raise ValueError(f"global_pool must be '', 'avg' or 'token', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a class token")
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=norm_eps)  # 1e-6: timm's; 1e-5: torch's default
        act_layer = act_layer or nn.GELU
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.no_embed_class = no_embed_class

        self.patch_embed = embed_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                       bias=not pre_norm)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        embed_len = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, embed_len, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.Sequential(*[
            block_fn(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm,
                     init_values=init_values, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i],
                     norm_layer=norm_layer, act_layer=act_layer, mlp_layer=mlp_layer, attn_layer=attn_layer,
                     backend=backend)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.act_quant = None  # rounds the embedded tokens (cls/pos concat and add); set by prepare_qat
        self.init_weights()

    def init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        init_linear_norm(self)

    @torch.jit.ignore
    def no_weight_decay(self):
        """Parameters to keep out of weight decay (besides biases and norms)."""
        return {"pos_embed", "cls_token", "dist_token"}

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prefix_tokens(self, x):
        return [self.cls_token.expand(x.shape[0], -1, -1)] if self.cls_token is not None else []

    @property
    def patch_stride(self):
        """Pixels per token along a side: crop sizes for this model are multiples of it."""
        return self.patch_embed.patch_size[0]

    def set_dynamic_img_size(self, enable=True):
        """Take any image size divisible by the patch (multi-crop), the position embedding resampled
        bicubically to each input's grid, as DINO's interpolate_pos_encoding and timm's dynamic_img_size."""
        if not hasattr(self.patch_embed, "strict_img_size"):
            raise ValueError(f"{type(self.patch_embed).__name__} takes one image size only")
        self.patch_embed.strict_img_size = not enable

    def pos_embed_for(self, grid):
        """The position embedding for a grid of patches: the learned one, resampled to another grid."""
        if grid is None or tuple(grid) == tuple(self.patch_embed.grid_size):
            return self.pos_embed
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        return resample_abs_pos_embed(self.pos_embed, grid, prefix, old_grid=self.patch_embed.grid_size)

    def _pos_embed(self, x, grid=None):
        prefix, pos_embed = self.prefix_tokens(x), self.pos_embed_for(grid)
        if self.no_embed_class:
            x = torch.cat(prefix + [x + pos_embed], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos_embed
        if self.act_quant is not None:
            x = self.act_quant(x)
        return self.pos_drop(x)

    def forward_features(self, x, return_attn=None):
        """Token features after the final norm; with return_attn ("logits" | "probs") also the list of
        every block's (B, H, N, N) attention, from the same forward pass."""
        grid = None if getattr(self.patch_embed, "strict_img_size", True) else self.patch_embed.grid_of(x)
        x = self.norm_pre(self._pos_embed(self.patch_embed(x), grid))
        x, attns = run_blocks(self.blocks, x, return_attn)
        x = self.norm(x)
        return (x, attns) if return_attn else x

    def pool(self, x):
        if self.global_pool == "avg":
            return x[:, self.num_prefix_tokens:].mean(dim=1)
        return x[:, 0] if self.global_pool == "token" else x

    def forward_head(self, x, pre_logits=False):
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict, model):
    """timm / official layouts -> this model: strips wrappers and 'module.' prefixes and resamples the
    position embedding to the model's grid (so img_size may differ from the checkpoint's)."""
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        if k == "pos_embed" and hasattr(model, "pos_embed") and v.shape != model.pos_embed.shape:
            prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            v = resample_abs_pos_embed(v, model.patch_embed.grid_size, num_prefix_tokens=prefix)
        out[k] = v
    return out


VisionTransformer.checkpoint_filter_fn = staticmethod(checkpoint_filter_fn)

# name: (patch, dim, depth, heads, img[, mlp_ratio]) — timm's configurations.
_VIT = {
    "vit_tiny_patch16_224": (16, 192, 12, 3, 224), "vit_tiny_patch16_384": (16, 192, 12, 3, 384),
    "vit_small_patch16_224": (16, 384, 12, 6, 224), "vit_small_patch16_384": (16, 384, 12, 6, 384),
    "vit_small_patch32_224": (32, 384, 12, 6, 224), "vit_small_patch32_384": (32, 384, 12, 6, 384),
    "vit_base_patch16_224": (16, 768, 12, 12, 224), "vit_base_patch16_384": (16, 768, 12, 12, 384),
    "vit_base_patch32_224": (32, 768, 12, 12, 224), "vit_base_patch32_384": (32, 768, 12, 12, 384),
    "vit_large_patch16_224": (16, 1024, 24, 16, 224), "vit_large_patch16_384": (16, 1024, 24, 16, 384),
    "vit_large_patch32_224": (32, 1024, 24, 16, 224), "vit_large_patch32_384": (32, 1024, 24, 16, 384),
    "vit_huge_patch14_224": (14, 1280, 32, 16, 224),
    # ViT-g/14 and ViT-G/14 (Zhai et al., Scaling Vision Transformers): MLP widths 6144 and 8192
    "vit_giant_patch14_224": (14, 1408, 40, 16, 224, 48 / 11),
    "vit_gigantic_patch14_224": (14, 1664, 48, 16, 224, 64 / 13),
    # not timm's: the model of vitfast.train's built-in default run, 32x32 images in 4x4 patches (64 tokens)
    "vit_pico_patch4_32": (4, 96, 4, 3, 32),
}


def _register_vit(name, patch, dim, depth, heads, img, mlp_ratio=4.0):
    # timm evaluates at crop 0.9 at 224 px and 1.0 at 384; the 32 px model sees its whole image
    mlp = {} if mlp_ratio == 4.0 else {"mlp_ratio": mlp_ratio}
    return register_variant(name, VisionTransformer,
                            dict(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, **mlp),
                            model_config(img, INCEPTION_MEAN, INCEPTION_STD, crop_pct=0.9 if img == 224 else 1.0),
                            f"ViT: patch {patch}, width {dim}" + (f" (MLP {round(dim * mlp_ratio)})" if mlp else "") +
                            f", depth {depth}, {heads} heads, {img}x{img} input.")


for _name, _args in _VIT.items():
    globals()[_name] = _register_vit(_name, *_args)
