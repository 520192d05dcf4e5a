"""DVT, the Dynamic Vision Transformer (Wang et al., NeurIPS 2021): a cascade of three transformers on
7x7, 10x10 and 14x14 tokens; an image leaves at the first exit whose confidence is high enough.

Each later stage reuses what the earlier one computed:
- feature reuse: the previous stage's final tokens (before its last norm) go, in every block, through
  LayerNorm and an MLP (dim -> 128 -> 48), are resampled to this stage's grid and concatenated (with a
  zero slot for the class token) onto the input of the block's MLP, which therefore takes dim + 48;
- relationship reuse: the previous stage's pre-softmax attention logits of all blocks (heads x depth
  channels) go through a 1x1-convolution MLP (3x expansion, GELU), are resampled to this stage's grid
  along queries and keys, and are added to the attention logits of the matching blocks.
Resampling is DVT's: nearest upsampling to twice the source grid, then adaptive average pooling.

Module and parameter names follow the official code (github.com/blackfeather-wang/Dynamic-Vision-
Transformer), including its spelling `feature_resuse_mlp`, so its checkpoints load with strict=True:
less_less_token (7x7), less_token (10x10), normal_token (14x14), each a T2T-ViT (or DeiT-S) with
relation_reuse_conv in the reusing stages.
"""
import math
from collections import namedtuple
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Attention, Block, Mlp, check_image, fused, resample_abs_pos_embed, run_block, to_2tuple
from .complexity import count_macs
from .registry import model_config, register_variant
from .t2t_vit import T2TViT, unwrap_state_dict
from .vision_transformer import VisionTransformer

__all__ = ["DynamicVisionTransformer", "ReuseBlock", "PaddedPatchEmbed", "EarlyExit", "ThresholdFit",
           "fit_thresholds", "evaluate_thresholds", "checkpoint_filter_fn"]

STAGE_NAMES = ("less_less_token", "less_token", "normal_token")
# (kernel, stride, padding) of each stage's first soft split (T2T) or patch embedding (DeiT).
T2T_STAGE_SPLITS = ((14, 8, 3), (11, 6, 5), (7, 4, 2))
DEIT_STAGE_SPLITS = ((32, 32, 0), (23, 23, 3), (16, 16, 0))

EarlyExit = namedtuple("EarlyExit", ["logits", "predictions", "exits", "macs"])
EarlyExit.__doc__ = """What DynamicVisionTransformer.early_exit returns, per sample: the logits of the exit
taken (B, num_classes), their argmax (B,), the exit's index (B,) and its cumulative MACs (B,)."""


def _identity(x):
    return x


def resample_grid(t, src, dst):
    """(..., src_h*src_w) -> (..., dst_h*dst_w): nearest upsampling to twice the source grid, then
    adaptive average pooling to dst (DVT's resampling of features and attention between stages)."""
    lead = t.shape[:-1]
    t = t.reshape(-1, 1, *src)
    t = F.interpolate(t, size=(2 * src[0], 2 * src[1]), mode="nearest")
    t = F.adaptive_avg_pool2d(t, dst)
    return t.reshape(*lead, dst[0] * dst[1])


class ReuseBlock(Block):
    """vitfast's Block plus DVT's feature reuse: with feature_reuse, norm2 and the MLP take the token
    concatenated with `reuse_dim` reused channels, and feature_resuse_mlp (LayerNorm, MLP dim -> 128 ->
    reuse_dim) maps the previous stage's tokens to those channels."""

    # what the stage calls outside forward(): FSDP shards it as a unit of its own, gathered when called
    shard_apart = ("feature_resuse_mlp",)

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_norm=False, proj_drop=0.0, attn_drop=0.0,
                 init_values=None, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, mlp_layer=Mlp,
                 attn_layer=Attention, backend=None, feature_reuse=False, reuse_dim=48, reuse_hidden=128):
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_drop=proj_drop,
                         attn_drop=attn_drop, init_values=init_values, drop_path=drop_path, act_layer=act_layer,
                         norm_layer=norm_layer, mlp_layer=mlp_layer, attn_layer=attn_layer, backend=backend)
        self.feature_reuse = feature_reuse
        if feature_reuse:
            self.norm2 = norm_layer(dim + reuse_dim)
            self.mlp = mlp_layer(in_features=dim + reuse_dim, hidden_features=int(dim * mlp_ratio), out_features=dim,
                                 act_layer=act_layer, drop=proj_drop)
            self.feature_resuse_mlp = nn.Sequential(  # (sic) the official name
                norm_layer(dim), Mlp(in_features=dim, hidden_features=reuse_hidden, out_features=reuse_dim,
                                     act_layer=act_layer, drop=proj_drop))

    def forward(self, x, attn_bias=None, return_attn=None, reused=None):
        """reused: (B, N, reuse_dim) channels for the MLP input (required with feature_reuse)."""
        if self.feature_reuse and reused is None:
            raise ValueError("this block reuses features: pass reused=(B, N, reuse_dim) channels")
        if self._fused(return_attn):  # the vitfast backend: Block's fused pieces (vitfast.layers.fused)
            x, h = self._attn_part(x, attn_bias, fuse_norm2=not self.feature_reuse)
            if h is None:
                h = fused.norm(self.norm2, torch.cat([x, reused], dim=-1) if self.feature_reuse else x)
            return self._mlp_part(x, h)
        y = self.attn(self.norm1(x), attn_bias=attn_bias, return_attn=return_attn)
        y, attn = y if return_attn else (y, None)
        q = getattr(self, "act_quant", None) or _identity  # Block's QAT hook on the residual sums
        x = q(x + self.drop_path1(self.ls1(y)))
        h = torch.cat([x, reused], dim=-1) if self.feature_reuse else x
        x = q(x + self.drop_path2(self.ls2(self.mlp(self.norm2(h)))))
        return (x, attn) if return_attn else x


class PaddedPatchEmbed(nn.Module):
    """Patch embedding by a strided convolution with padding (DVT-DeiT's 10x10 stage: 23x23 patches,
    padding 3, at 224). Official name: proj."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, bias=True, padding=0):
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = to_2tuple(img_size), to_2tuple(patch_size), in_chans
        self.padding = padding
        self.grid_size = self.grid_of_size(self.img_size)
        if min(self.grid_size) < 1:
            raise ValueError(f"img_size {self.img_size} is smaller than the patch size {self.patch_size}")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                              padding=padding, bias=bias)
        self.norm = nn.Identity()
        self.strict_img_size = True  # False: any size (multi-crop; the DVT model checks the sizes it takes)

    def grid_of_size(self, size):
        return tuple((n + 2 * self.padding - p) // p + 1 for n, p in zip(size, self.patch_size))

    def grid_of(self, x):
        """The (rows, columns) of patches an image batch x makes."""
        return self.grid_of_size(x.shape[-2:])

    def forward(self, x):
        check_image(x, self.in_chans, self.img_size if self.strict_img_size else None, who=type(self).__name__)
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class _ReuseStage:
    """What a DVT stage adds to its backbone: relation_reuse_conv, and forward_stage, which runs the
    backbone with the previous stage's tokens and attention logits reused."""

    def _init_reuse(self, relation_reuse):
        self.relation_reuse = relation_reuse
        if relation_reuse:
            c = self.blocks[0].attn.num_heads * len(self.blocks)
            self.relation_reuse_conv = nn.Sequential(nn.Conv2d(c, 3 * c, kernel_size=1), nn.GELU(),
                                                     nn.Conv2d(3 * c, c, kernel_size=1))

    @property
    def feature_reuse(self):
        return getattr(self.blocks[0], "feature_reuse", False)

    def reuse_relations(self, relations, src, dst=None):
        """Previous stage's per-block (B, H, 1+S, 1+S) logits on its src grid -> per-block additive biases
        on this stage's (B, H, 1+N, 1+N) logits on its dst grid (its own at img_size by default); the
        class token's row and column are carried over as they are."""
        r = self.relation_reuse_conv(torch.cat(relations, dim=1))  # (B, depth*H, 1+S, 1+S)
        dst = dst or self.grid_size
        r = torch.cat([r[..., :1], resample_grid(r[..., 1:], src, dst)], dim=-1).transpose(-1, -2)  # keys
        r = torch.cat([r[..., :1], resample_grid(r[..., 1:], src, dst)], dim=-1).transpose(-1, -2)  # queries
        return r.chunk(len(self.blocks), dim=1)

    def reuse_features(self, blk, features, src, dst=None):
        """Previous stage's (B, 1+S, C) tokens -> this block's (B, 1+N, reuse_dim) MLP channels."""
        f = blk.feature_resuse_mlp(features)[:, 1:].transpose(1, 2)  # (B, reuse_dim, S)
        f = resample_grid(f, src, dst or self.grid_size).transpose(1, 2)
        return torch.cat([f.new_zeros(f.shape[0], 1, f.shape[2]), f], dim=1)

    def forward_stage(self, x, features=None, relations=None, src_grid=None, return_relations=False, grid=None,
                      with_logits=True):
        """-> (logits, or None without with_logits; final tokens before the norm; per-block attention
        logits or None). grid: the input's (self.grid_of(x), another than grid_size under the model's
        dynamic_img_size), when the caller has it already."""
        grid = grid or self.grid_of(x)
        x = self.embed_tokens(x)
        biases = (self.reuse_relations(relations, src_grid, grid) if relations is not None
                  else [None] * len(self.blocks))
        out_relations = [] if return_relations else None
        for blk, bias in zip(self.blocks, biases):
            reused = self.reuse_features(blk, features, src_grid, grid) if features is not None else None
            if return_relations:
                x, a = run_block(blk, x, attn_bias=bias, return_attn="logits", reused=reused)
                out_relations.append(a)
            else:
                x = run_block(blk, x, attn_bias=bias, reused=reused)
        return self.forward_head(self.norm(x)) if with_logits else None, x, out_relations


class T2TStage(_ReuseStage, T2TViT):
    """A DVT stage on a T2T-ViT backbone (tokens_to_token, cls_token, pos_embed, blocks, norm, head)."""

    def __init__(self, feature_reuse=False, relation_reuse=False, reuse_dim=48, reuse_hidden=128, **kwargs):
        super().__init__(block_fn=partial(ReuseBlock, feature_reuse=feature_reuse, reuse_dim=reuse_dim,
                                          reuse_hidden=reuse_hidden), **kwargs)
        self._init_reuse(relation_reuse)

    input_multiple = 1  # any size: the DVT model checks what its stages take (a stride of 24 does not divide 224)


class DeiTStage(_ReuseStage, VisionTransformer):
    """A DVT stage on a DeiT backbone (patch_embed.proj, cls_token, pos_embed, blocks, norm, head)."""

    def __init__(self, img_size=224, patch_split=(16, 16, 0), drop_rate=0.0, feature_reuse=False, relation_reuse=False,
                 reuse_dim=48, reuse_hidden=128, **kwargs):
        kernel, stride, padding = patch_split
        if kernel != stride:
            raise ValueError(f"DeiT stages use non-overlapping patches, got kernel {kernel} and stride {stride}")
        # As in DVT's timm: drop_rate drops after the position embedding and in the blocks, not before the head.
        super().__init__(img_size=img_size, patch_size=kernel, drop_rate=0.0, pos_drop_rate=drop_rate,
                         proj_drop_rate=drop_rate, embed_layer=partial(PaddedPatchEmbed, padding=padding),
                         block_fn=partial(ReuseBlock, feature_reuse=feature_reuse, reuse_dim=reuse_dim,
                                          reuse_hidden=reuse_hidden), **kwargs)
        self.img_size, self.grid_size = to_2tuple(img_size), self.patch_embed.grid_size
        if self.cls_token.device.type != "meta":
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self._init_reuse(relation_reuse)

    def grid_of(self, x):
        return self.patch_embed.grid_of(x)

    def embed_tokens(self, x):
        grid = None if self.patch_embed.strict_img_size else self.patch_embed.grid_of(x)
        return self.norm_pre(self._pos_embed(self.patch_embed(x), grid))


class DynamicVisionTransformer(nn.Module):
    """Three stages (less_less_token, less_token, normal_token) on increasingly fine token grids.
    forward(x) returns the three exits' logits; early_exit(x, thresholds) classifies each image at the
    first confident exit, running later stages only on the images that need them."""

    def __init__(self, backbone="t2t", img_size=224, in_chans=3, num_classes=1000, embed_dim=384, depth=14,
                 num_heads=6, mlp_ratio=3.0, qkv_bias=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 stage_splits=None, feature_reuse=True, relation_reuse=True, reuse_dim=48, reuse_hidden=128,
                 tokens_type="performer", token_dim=64, backend=None):
        super().__init__()
        if backbone not in ("t2t", "deit"):
            raise ValueError(f"backbone must be 't2t' or 'deit', got {backbone!r}")
        stage_splits = stage_splits or (T2T_STAGE_SPLITS if backbone == "t2t" else DEIT_STAGE_SPLITS)
        if len(stage_splits) != len(STAGE_NAMES):
            raise ValueError(f"DVT has {len(STAGE_NAMES)} stages, got {len(stage_splits)} stage_splits")
        self.backbone, self.img_size, self.in_chans = backbone, to_2tuple(img_size), in_chans
        self.num_classes, self.embed_dim, self.num_features = num_classes, embed_dim, embed_dim
        self.feature_reuse, self.relation_reuse = feature_reuse, relation_reuse
        common = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                      num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                      drop_path_rate=drop_path_rate, reuse_dim=reuse_dim, reuse_hidden=reuse_hidden, backend=backend)
        for i, (name, split) in enumerate(zip(STAGE_NAMES, stage_splits)):
            reuse = dict(feature_reuse=feature_reuse and i > 0, relation_reuse=relation_reuse and i > 0)
            if backbone == "t2t":
                stage = T2TStage(tokens_type=tokens_type, token_dim=token_dim, first_split=tuple(split),
                                 qkv_bias=bool(qkv_bias), **reuse, **common)
            else:
                stage = DeiTStage(patch_split=tuple(split), qkv_bias=True if qkv_bias is None else qkv_bias,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6), **reuse, **common)
            setattr(self, name, stage)
        self._exit_macs = {}

    @property
    def stages(self):
        return tuple(getattr(self, name) for name in STAGE_NAMES)

    @property
    def num_exits(self):
        return len(STAGE_NAMES)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"{name}.{p}" for name, stage in zip(STAGE_NAMES, self.stages) for p in stage.no_weight_decay()}

    def get_classifier(self):
        return [stage.head for stage in self.stages]

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        for stage in self.stages:
            stage.reset_classifier(num_classes, global_pool)
        self._exit_macs.clear()

    @property
    def patch_stride(self):
        """Pixels per token of the finest stage: multi-crop sizes are multiples of it (the coarser
        stages' padded splits take any size)."""
        return self.stages[-1].patch_stride

    def set_dynamic_img_size(self, enable=True):
        """Take any image size the finest stage's patch divides (multi-crop): every stage resamples its
        position embedding to its own grid at that size, and the reused features and relations are
        resampled between the stages' grids as at img_size."""
        for stage in self.stages:
            stage.set_dynamic_img_size(enable)
        self.dynamic_img_size = enable

    def _check(self, x):
        if not getattr(self, "dynamic_img_size", False):
            check_image(x, self.in_chans, self.img_size, who=type(self).__name__)
            return
        check_image(x, self.in_chans, multiple_of=(self.patch_stride,) * 2, who=type(self).__name__)
        if min(min(stage.grid_of(x)) for stage in self.stages) < 1:
            raise ValueError(f"{type(self).__name__} makes no tokens of a {x.shape[-2]}x{x.shape[-1]} image in its "
                             f"coarsest stage; give it sides of at least {self.min_img_size()} px")

    def min_img_size(self):
        """The smallest side (a multiple of patch_stride) every stage makes tokens of."""
        side = self.patch_stride
        while min(min(stage.grid_of(torch.empty(0, 0, side, side, device="meta"))) for stage in self.stages) < 1:
            side += self.patch_stride
        return side

    def forward_features(self, x):
        """The last stage's tokens after its norm, the whole cascade run (its reuse included): the
        features of the model's finest exit, what self-supervised heads, k-NN and linear probes take."""
        *_, (_, (tokens, _, _)) = self._cascade(x, self.num_exits, last_logits=False)
        return self.stages[-1].norm(tokens)

    def forward_head(self, x, pre_logits=False):
        return self.stages[-1].forward_head(x, pre_logits=pre_logits)

    def _run_stage(self, i, x, previous, need_relations, with_logits=True):
        """previous: (tokens, relations, grid) of stage i-1 or None."""
        stage = self.stages[i]
        features = relations = src = None
        if previous is not None:
            tokens, rels, src = previous
            features = tokens if stage.feature_reuse else None
            relations = rels if stage.relation_reuse else None
        grid = stage.grid_of(x)
        logits, tokens, rels = stage.forward_stage(x, features, relations, src, return_relations=need_relations,
                                                   grid=grid, with_logits=with_logits)
        return logits, (tokens, rels, grid)

    def _needs_relations(self, i):
        """Whether stage i must return its attention logits (the next stage reuses them)."""
        return i + 1 < self.num_exits and self.stages[i + 1].relation_reuse

    def _cascade(self, x, n, last_logits=True):
        """(logits, (tokens, relations, grid)) of the first n stages, in turn, each reusing the one before;
        the last stage's logits None unless last_logits (its tokens are what forward_features wants)."""
        self._check(x)
        previous = None
        for i in range(n):
            last = i + 1 == n
            logits, previous = self._run_stage(i, x, previous, not last and self._needs_relations(i),
                                               with_logits=last_logits or not last)
            yield logits, previous

    def forward_exits(self, x, num_exits=None):
        """The logits of the first num_exits exits (all by default), computed in cascade."""
        return [logits for logits, _ in self._cascade(x, num_exits or self.num_exits)]

    def forward(self, x):
        """[exit-1 logits, exit-2 logits, exit-3 logits], each (B, num_classes). Training: sum their losses."""
        return self.forward_exits(x)

    def exit_macs(self, img_size=None):
        """Cumulative multiply-accumulates of one image leaving at each exit (everything up to and
        including that stage's reuse modules and head), measured by count_macs."""
        size = self.img_size if img_size is None else to_2tuple(img_size)
        if tuple(size) != self.img_size:
            raise ValueError(f"this model takes {self.img_size[0]}x{self.img_size[1]} images; create it with "
                             f"img_size={size[0]} to count MACs at {size[0]}x{size[1]}")
        key = (size, self.num_classes)
        if key not in self._exit_macs:
            self._exit_macs[key] = tuple(
                count_macs(self, size, self.in_chans, forward=partial(self.forward_exits, num_exits=k + 1))
                for k in range(self.num_exits))
        return self._exit_macs[key]

    @torch.no_grad()
    def early_exit(self, x, thresholds):
        """Classify each image at the first exit i whose confidence (max softmax) is >= thresholds[i];
        the last exit takes everything left. Later stages run only on the images still undecided.
        thresholds: one per exit (the last is ignored) or one per exit but the last. Returns EarlyExit."""
        thresholds = [float(t) for t in thresholds]
        if len(thresholds) not in (self.num_exits - 1, self.num_exits):
            raise ValueError(f"need {self.num_exits - 1} or {self.num_exits} thresholds, got {len(thresholds)}")
        self._check(x)
        macs_of_exit = torch.tensor(self.exit_macs(), dtype=torch.int64, device=x.device)
        B = x.shape[0]
        out_logits = exits = None
        idx = torch.arange(B, device=x.device)  # samples still running, as indices into the batch
        previous = None
        for i in range(self.num_exits):
            logits, previous = self._run_stage(i, x, previous, self._needs_relations(i))
            if out_logits is None:
                out_logits = logits.new_empty(B, logits.shape[-1])
                exits = torch.full((B,), self.num_exits - 1, dtype=torch.int64, device=x.device)
            if i == self.num_exits - 1:
                out_logits[idx] = logits
                break
            leave = logits.softmax(-1).amax(-1) >= thresholds[i]
            out_logits[idx[leave]] = logits[leave]
            exits[idx[leave]] = i
            stay = ~leave
            if not bool(stay.any()):
                break
            idx, x = idx[stay], x[stay]
            tokens, rels, grid = previous
            previous = (tokens[stay], [r[stay] for r in rels] if rels is not None else None, grid)
        return EarlyExit(out_logits, out_logits.argmax(-1), exits, macs_of_exit[exits])


def checkpoint_filter_fn(state_dict, model):
    """Official DVT checkpoints (a dict with model_state_dict, flops, thresholds, ...) -> this model.
    Names are the official ones; this unwraps and resamples the stages' position embeddings when the
    image size differs from the checkpoint's."""
    out = unwrap_state_dict(state_dict)
    own = model.state_dict()
    for name, stage in zip(STAGE_NAMES, model.stages):
        key = f"{name}.pos_embed"
        if key in out and out[key].shape != own[key].shape and out[key].shape[-1] == own[key].shape[-1]:
            out[key] = resample_abs_pos_embed(out[key], stage.grid_size, num_prefix_tokens=1)
    return out


DynamicVisionTransformer.checkpoint_filter_fn = staticmethod(checkpoint_filter_fn)


# ---- budgeted classification: thresholds for a target mean cost -------------------------------------

ThresholdFit = namedtuple("ThresholdFit", ["thresholds", "mean_macs", "accuracy", "exit_fractions"])
ThresholdFit.__doc__ = """fit_thresholds' result on the logits it was fitted to: thresholds (one per exit,
the last 0.0), the mean cumulative MACs, the accuracy (None without labels) and the fraction of samples
leaving at each exit."""


def _confidences(exit_logits):
    """(E, N) max-softmax confidences and (E, N) predictions, as numpy arrays (the search below makes
    many tiny passes over them, which numpy runs without a thread pool's overhead)."""
    if isinstance(exit_logits, torch.Tensor):
        exit_logits = list(exit_logits.unbind(0))
    probs = [lg.detach().float().cpu().softmax(-1) for lg in exit_logits]
    conf = torch.stack([p.amax(-1) for p in probs]).numpy().astype(np.float64)
    return conf, torch.stack([p.argmax(-1) for p in probs]).numpy()


def _route(conf, thresholds):
    """Exit index of every sample under thresholds (the last exit takes the rest)."""
    E, N = conf.shape
    exits = np.full(N, E - 1)
    open_ = np.ones(N, dtype=bool)
    for k in range(E - 1):
        leave = open_ & (conf[k] >= thresholds[k])
        exits[leave] = k
        open_ &= ~leave
    return exits


def _thresholds_for_fractions(conf, fractions):
    """DVT's rule: at exit k, among the samples still open, the floor(N * fractions[k]) most confident
    leave. The official threshold is the confidence of the last of them; here it is the midpoint of
    the gap below it, so that a confidence recomputed with rounding differences (another batch
    size, another device) routes the same way (inf when none leaves, 0 when all do)."""
    E, N = conf.shape
    thresholds, open_ = [], np.ones(N, dtype=bool)
    for k in range(E - 1):
        n_open = int(open_.sum())
        n_out = min(int(N * fractions[k]), n_open)
        if n_out == 0:
            t = float("inf")
        elif n_out == n_open:
            t = 0.0
        else:
            ranked = -np.sort(-conf[k][open_])
            t = float(ranked[n_out - 1] + ranked[n_out]) / 2
        thresholds.append(t)
        open_ &= ~(conf[k] >= t)
    return thresholds + [0.0]


def _evaluate(conf, pred, labels, thresholds, macs):
    exits = _route(conf, thresholds)
    fractions = tuple(float(f) for f in np.bincount(exits, minlength=conf.shape[0]) / conf.shape[1])
    acc = None if labels is None else float((pred[exits, np.arange(conf.shape[1])] == labels).mean())
    return acc, float(macs[exits].mean()), fractions


def _labels(labels):
    return None if labels is None else torch.as_tensor(labels).cpu().numpy()


def evaluate_thresholds(exit_logits, labels, thresholds, exit_macs):
    """Route held-out logits through thresholds: (accuracy or None, mean MACs, per-exit fractions)."""
    conf, pred = _confidences(exit_logits)
    return _evaluate(conf, pred, _labels(labels), thresholds, np.asarray(exit_macs, dtype=np.float64))


def fit_thresholds(exit_logits, labels, budget_macs, exit_macs):
    """Confidence thresholds whose mean cost on these (held-out) logits is as close to budget_macs as
    the family allows without exceeding it.

    The family is DVT's: a fraction proportional to p**k of the samples leaves at exit k (k = 1..E), the
    most confident first, with thresholds read off the held-out confidences. The official code sweeps
    p over a fixed grid and reports the cost it lands on; here the mean cost, non-decreasing in p, is
    searched for the budget (a log-spaced scan of p, then bisection between the last affordable and
    the first unaffordable p), and a threshold is never left unreachable when too few samples remain.

    exit_logits: a list of E (N, C) logits or an (E, N, C) tensor; labels: (N,) or None; exit_macs:
    cumulative MACs per exit (DynamicVisionTransformer.exit_macs())."""
    conf, pred = _confidences(exit_logits)
    E = conf.shape[0]
    if len(exit_macs) != E:
        raise ValueError(f"exit_macs has {len(exit_macs)} entries for {E} exits")
    if budget_macs < exit_macs[0]:
        raise ValueError(f"budget_macs {budget_macs:.4g} is below the cost of the first exit ({exit_macs[0]:.4g})")
    labels, macs = _labels(labels), np.asarray(exit_macs, dtype=np.float64)

    def fit(thresholds):
        acc, mean, fractions = _evaluate(conf, pred, labels, thresholds, macs)
        return ThresholdFit(tuple(thresholds), mean, acc, fractions)

    def at(log_p):
        w = [math.exp(log_p * k) for k in range(1, E + 1)]
        return fit(_thresholds_for_fractions(conf, [v / sum(w) for v in w]))

    if budget_macs >= exit_macs[-1]:  # everything can run to the end
        return fit((float("inf"),) * (E - 1) + (0.0,))
    best = fit((0.0,) * E)  # everything leaves at exit 1: affordable, the fallback
    grid = [-12.0 + 0.25 * i for i in range(97)]  # log p
    fits = [at(lp) for lp in grid]
    ok = [i for i, f in enumerate(fits) if f.mean_macs <= budget_macs]
    if ok:
        i = max(ok)
        best = max(best, fits[i], key=lambda f: f.mean_macs)
        if i + 1 < len(grid):
            lo, hi = grid[i], grid[i + 1]
            for _ in range(40):
                mid = (lo + hi) / 2
                f = at(mid)
                if f.mean_macs <= budget_macs:
                    lo, best = mid, max(best, f, key=lambda f: f.mean_macs)
                else:
                    hi = mid
    return best


# ---- registered models -------------------------------------------------------------------------------

# name: (backbone, embed_dim, depth, num_heads, mlp_ratio) — the official DVT configurations.
_DVT = {
    "dvt_t2t_vit_12": ("t2t", 256, 12, 4, 2.0),
    "dvt_t2t_vit_14": ("t2t", 384, 14, 6, 3.0),
    "dvt_deit_small": ("deit", 384, 12, 6, 4.0),
}


def _register_dvt(name, backbone, dim, depth, heads, mlp_ratio):
    return register_variant(
        name, DynamicVisionTransformer,
        dict(backbone=backbone, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio),
        model_config(224, crop_pct=0.875 if backbone == "deit" else 0.9, interpolation="bicubic"),
        f"DVT on {'T2T-ViT' if backbone == 't2t' else 'DeiT'} stages (width {dim}, depth {depth}, {heads} heads): "
        f"exits on 7x7, 10x10 and 14x14 tokens at 224, with feature and relationship reuse.")


for _name, _args in _DVT.items():
    globals()[_name] = _register_dvt(_name, *_args)
