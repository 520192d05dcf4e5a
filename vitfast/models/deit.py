"""DeiT (Touvron et al. 2021): the ViT recipe with a distillation token in the *_distilled_* variants."""
import torch
from torch import nn

from .registry import model_config, register_variant
from .vision_transformer import VisionTransformer, checkpoint_filter_fn

__all__ = ["VisionTransformerDistilled"]


class VisionTransformerDistilled(VisionTransformer):
    """ViT with a distillation token and its own head (head_dist). Training mode returns
    (class logits, distillation logits); eval mode their mean, as in DeiT."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 2, self.embed_dim))
        self.head_dist = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.head_dist.weight if self.num_classes > 0 else self.dist_token, std=0.02)

    def reset_classifier(self, num_classes, global_pool=None):
        super().reset_classifier(num_classes, global_pool)
        self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prefix_tokens(self, x):
        return [self.cls_token.expand(x.shape[0], -1, -1), self.dist_token.expand(x.shape[0], -1, -1)]

    def forward_head(self, x, pre_logits=False):
        x_cls, x_dist = x[:, 0], x[:, 1]
        if pre_logits:
            return (x_cls + x_dist) / 2
        x_cls, x_dist = self.head(self.head_drop(x_cls)), self.head_dist(self.head_drop(x_dist))
        return (x_cls, x_dist) if self.training else (x_cls + x_dist) / 2


VisionTransformerDistilled.checkpoint_filter_fn = staticmethod(checkpoint_filter_fn)

# name: (dim, heads, img, distilled)
_DEIT = {
    "deit_tiny_patch16_224": (192, 3, 224, False), "deit_small_patch16_224": (384, 6, 224, False),
    "deit_base_patch16_224": (768, 12, 224, False), "deit_base_patch16_384": (768, 12, 384, False),
    "deit_tiny_distilled_patch16_224": (192, 3, 224, True), "deit_small_distilled_patch16_224": (384, 6, 224, True),
    "deit_base_distilled_patch16_224": (768, 12, 224, True), "deit_base_distilled_patch16_384": (768, 12, 384, True),
}


def _register_deit(name, dim, heads, img, distilled):
    return register_variant(name, VisionTransformerDistilled if distilled else VisionTransformer,
                            dict(img_size=img, patch_size=16, embed_dim=dim, depth=12, num_heads=heads),
                            model_config(img, crop_pct=1.0 if img == 384 else 0.875),
                            f"DeiT{' (distilled)' if distilled else ''}: width {dim}, {heads} heads, {img}x{img} input.")


for _name, _args in _DEIT.items():
    globals()[_name] = _register_deit(_name, *_args)
