"""R50+ViT hybrids (Dosovitskiy et al. 2020, the paper's "R50+ViT-B/16"): the stem and first three stages
of a ResNet-V2 (weight-standardised convolutions, GroupNorm, TensorFlow SAME padding) turn the image
into a 1/16-scale feature map, and a 1x1 projection (HybridEmbed) makes each of its pixels a token of
vitfast's VisionTransformer. Module and parameter names are timm's (vision_transformer_hybrid +
resnetv2), so timm state dicts load strict and ours load into timm."""
import math
from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import check_image, to_2tuple
from .registry import INCEPTION_MEAN, INCEPTION_STD, model_config, register_variant
from .vision_transformer import VisionTransformer

__all__ = ["ResNetV2", "HybridEmbed", "StdConv2dSame", "GroupNormAct", "MaxPool2dSame"]


def pad_same(x, kernel_size, stride, value=0.0):
    """TensorFlow's SAME padding: output side ceil(input / stride), the odd pixel of padding at the end."""
    pads = []
    for size, k, s in zip(x.shape[-2:][::-1], kernel_size[::-1], stride[::-1]):  # F.pad wants W first
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2dSame(nn.Conv2d):
    """Conv2d (no bias) whose every filter is standardised to zero mean and unit variance before use
    (Qiao et al. 2019, as in BiT and Google's R50), with SAME padding. Stride-1 odd kernels pad
    statically (symmetric, identical to SAME); the others pad per input, as TensorFlow does."""

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, eps=1e-8):
        kernel_size, stride = to_2tuple(kernel_size), to_2tuple(stride)
        static = stride == (1, 1) and all(k % 2 for k in kernel_size)
        super().__init__(in_chs, out_chs, kernel_size, stride=stride,
                         padding=tuple(k // 2 for k in kernel_size) if static else 0, bias=False)
        self.same_pad = not static
        self.eps = eps

    def standardized_weight(self):
        # Batch norm in training mode over a (1, out, fan_in) view: one fused kernel computing
        # (w - mean) / sqrt(biased var + eps) per filter, with its gradient.
        w = self.weight.reshape(1, self.out_channels, -1)
        return F.batch_norm(w, None, None, training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)

    def forward(self, x):
        if self.same_pad:
            x = pad_same(x, self.kernel_size, self.stride)
        return F.conv2d(x, self.standardized_weight(), None, self.stride, self.padding)

    def extra_repr(self):
        return super().extra_repr() + f", eps={self.eps}" + (", padding=SAME (per input)" if self.same_pad else "")


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (32 groups) followed by ReLU, or by nothing (apply_act=False); timm's GroupNormAct."""

    def __init__(self, num_channels, num_groups=32, eps=1e-5, apply_act=True):
        super().__init__(num_groups, num_channels, eps=eps)
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class MaxPool2dSame(nn.Module):
    """Max pooling with SAME padding (padded with -inf, so padding never wins)."""

    def __init__(self, kernel_size=3, stride=2):
        super().__init__()
        self.kernel_size, self.stride = to_2tuple(kernel_size), to_2tuple(stride)

    def forward(self, x):
        return F.max_pool2d(pad_same(x, self.kernel_size, self.stride, value=float("-inf")), self.kernel_size,
                            self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class DownsampleConv(nn.Module):
    """The projection shortcut: strided 1x1 conv + GroupNorm without activation."""

    def __init__(self, in_chs, out_chs, stride=1):
        super().__init__()
        self.conv = StdConv2dSame(in_chs, out_chs, 1, stride=stride)
        self.norm = GroupNormAct(out_chs, apply_act=False)

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck (1x1 -> 3x3 (strided) -> 1x1, GroupNorm after each, ReLU after the sum)."""

    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=0.25, downsample=False):
        super().__init__()
        mid_chs = int(out_chs * bottle_ratio)
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if downsample else None
        self.conv1 = StdConv2dSame(in_chs, mid_chs, 1)
        self.norm1 = GroupNormAct(mid_chs)
        self.conv2 = StdConv2dSame(mid_chs, mid_chs, 3, stride=stride)
        self.norm2 = GroupNormAct(mid_chs)
        self.conv3 = StdConv2dSame(mid_chs, out_chs, 1)
        self.norm3 = GroupNormAct(out_chs, apply_act=False)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm3(self.conv3(self.norm2(self.conv2(self.norm1(self.conv1(x))))))
        return self.act3(x + shortcut)


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth):
        super().__init__()
        # The first block of every stage projects the shortcut (even at stride 1, to change width).
        self.blocks = nn.Sequential(*[
            Bottleneck(in_chs if i == 0 else out_chs, out_chs, stride=stride if i == 0 else 1, downsample=i == 0)
            for i in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class ResNetV2(nn.Module):
    """The hybrid's CNN: 7x7/2 stem conv, GroupNorm+ReLU, 3x3/2 max pool, then bottleneck stages of
    `layers` blocks (widths `channels`; stride 1 for the first stage, 2 after). No classifier: returns
    the (B, num_features, H/reduction, W/reduction) feature map (sides rounded up, as SAME padding does)."""

    def __init__(self, layers=(3, 4, 9), channels=(256, 512, 1024, 2048), in_chans=3, stem_chs=64):
        super().__init__()
        if not 1 <= len(layers) <= len(channels):
            raise ValueError(f"layers must name 1 to {len(channels)} stages, got {tuple(layers)}")
        self.in_chans = in_chans
        self.stem = nn.Sequential(OrderedDict([
            ("conv", StdConv2dSame(in_chans, stem_chs, 7, stride=2)),
            ("norm", GroupNormAct(stem_chs)),
            ("pool", MaxPool2dSame(3, 2)),
        ]))
        self.stages = nn.Sequential(*[
            ResNetStage(stem_chs if i == 0 else channels[i - 1], channels[i], 1 if i == 0 else 2, depth)
            for i, depth in enumerate(layers)])
        self.num_features = channels[len(layers) - 1]
        self.num_downsamples = 2 + len(layers) - 1  # stem conv, stem pool, each later stage
        self.init_weights()

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_size(self, img_size):
        """Side lengths of the output map for an input of img_size (each stride-2 step rounds up)."""
        size = to_2tuple(img_size)
        for _ in range(self.num_downsamples):
            size = tuple(math.ceil(s / 2) for s in size)
        return size

    def forward(self, x):
        return self.stages(self.stem(x))


class HybridEmbed(nn.Module):
    """CNN feature map -> tokens: backbone, then a patch_size conv `proj` to embed_dim, flattened to
    (B, N, embed_dim). Drop-in `embed_layer` of VisionTransformer (same constructor arguments as
    PatchEmbed). backbone: a module, or a callable taking in_chans and returning one (so the model's
    in_chans reaches the CNN)."""

    def __init__(self, backbone, img_size=224, patch_size=1, in_chans=3, embed_dim=768, bias=True):
        super().__init__()
        self.backbone = backbone if isinstance(backbone, nn.Module) else backbone(in_chans=in_chans)
        self.img_size, self.patch_size, self.in_chans = to_2tuple(img_size), to_2tuple(patch_size), in_chans
        if hasattr(self.backbone, "feature_size"):
            self.feature_size = tuple(self.backbone.feature_size(self.img_size))
            self.feature_dim = self.backbone.num_features
        else:  # any other CNN: measure its output once
            with torch.no_grad():
                was_training = self.backbone.training
                out = self.backbone.eval()(torch.zeros(1, in_chans, *self.img_size))
                self.backbone.train(was_training)
            out = out[-1] if isinstance(out, (list, tuple)) else out
            self.feature_size, self.feature_dim = tuple(out.shape[-2:]), out.shape[1]
        if self.feature_size[0] % self.patch_size[0] or self.feature_size[1] % self.patch_size[1]:
            raise ValueError(f"the backbone's {self.feature_size} feature map is not divisible by patch_size "
                             f"{self.patch_size}")
        self.grid_size = (self.feature_size[0] // self.patch_size[0], self.feature_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(self.feature_dim, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                              bias=bias)

    def forward(self, x):
        check_image(x, self.in_chans, self.img_size, who=type(self).__name__)
        x = self.backbone(x)
        x = x[-1] if isinstance(x, (list, tuple)) else x
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)


# name: (ResNet stages, img) — timm's configurations (ViT-B/16 widths on the 1/16 feature map).
_HYBRID = {
    "vit_base_r50_s16_224": ((3, 4, 9), 224),
    "vit_base_r50_s16_384": ((3, 4, 9), 384),
}


def _register_hybrid(name, layers, img):
    defaults = dict(img_size=img, patch_size=1, embed_dim=768, depth=12, num_heads=12,
                    embed_layer=partial(HybridEmbed, backbone=partial(ResNetV2, layers=layers)))
    config = model_config(img, INCEPTION_MEAN, INCEPTION_STD, crop_pct=1.0 if img == 384 else 0.9,
                          first_conv="patch_embed.backbone.stem.conv")
    return register_variant(name, VisionTransformer, defaults, config,
                            f"R50+ViT-B/16 hybrid: ResNet-V2 stages {layers} (GroupNorm, weight-standardised "
                            f"convs), ViT-B on its 1/16 feature map, {img}x{img} input.")


for _name, _args in _HYBRID.items():
    globals()[_name] = _register_hybrid(_name, *_args)
