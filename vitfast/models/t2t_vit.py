"""T2T-ViT (Yuan et al., ICCV 2021): a tokens-to-token module in front of a plain ViT trunk.

The tokens-to-token (T2T) module turns an image into tokens progressively: a soft split (overlapping
patches, nn.Unfold) makes tokens of the pixels, then twice a small single-head transformer layer mixes
them, they are folded back into a map and soft-split again (3x3, stride 2), and a linear layer projects
the result to the trunk's width. The trunk is a pre-norm ViT with a class token and fixed sinusoidal
position embeddings.

Module and parameter names follow the official code (github.com/yitu-opensource/T2T-ViT), so its
checkpoints load with strict=True: tokens_to_token.{attention1, attention2, project}, cls_token,
pos_embed, blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head. The trunk is
vitfast's Block, whose names coincide with the official block's. The fixed tensors (pos_embed, the
performer's random features w) are parameters with requires_grad=False, as there; the published
parameter counts include them.

t2t_vit_{7,10,12,14,19,24} take the Performer in the T2T module (as the official configs do);
t2t_vit_t_{14,19,24} take the transformer.
"""
import contextlib
import math

import torch
from torch import nn

from ..layers.init import init_linear_norm
from ..layers import Block, Mlp, check_image, resample_abs_pos_embed, run_blocks, sinusoid_table, to_2tuple
from ..layers import backend as backends
from ..layers.attention import attention_core, split_heads
from .registry import model_config, register_variant

__all__ = ["T2TViT", "T2TModule", "TokenPerformer", "TokenTransformer", "checkpoint_filter_fn", "split_grid"]

# (kernel, stride, padding) of the three soft splits; the first one sets the number of tokens.
T2T_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
TOKENS_TYPES = ("performer", "transformer")


def _no_autocast(device):
    """Autocast switched off on devices that have it (there is none to switch off on meta)."""
    if device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def split_grid(size, kernel, stride, padding):
    """Output grid of a soft split (nn.Unfold) of a size[0] x size[1] map."""
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in size)


class TokenPerformer(nn.Module):
    """The T2T module's single-head Performer layer (official names: kqv, proj, norm1, norm2, mlp, w).

    Softmax attention is approximated with positive random features
    phi(u) = exp(w u - |u|^2 / 2) / sqrt(m), m = in_dim * kernel_ratio rows of a fixed, scaled orthogonal
    matrix w: y = phi(q) (phi(k)^T v) / (phi(q) . sum_t phi(k_t)). Linear in the number of tokens. As in
    the official layer the residual is taken from v (the width changes from dim to in_dim), and its two
    dropouts are fixed at 0.1."""

    def __init__(self, dim, in_dim, kernel_ratio=0.5, dp1=0.1, dp2=0.1):
        super().__init__()
        self.emb = in_dim
        self.kqv = nn.Linear(dim, 3 * in_dim)
        self.dp = nn.Dropout(dp1)
        self.proj = nn.Linear(in_dim, in_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(in_dim)
        self.epsilon = 1e-8  # keeps the normaliser away from zero
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, in_dim), nn.Dropout(dp2))
        self.m = int(in_dim * kernel_ratio)
        w = torch.empty(self.m, in_dim)
        if w.device.type != "meta":
            w = nn.init.orthogonal_(w) * math.sqrt(self.m)
        self.w = nn.Parameter(w, requires_grad=False)  # a fixed draw; checkpoints carry it

    def random_features(self, u):
        """(B, T, emb) -> (B, T, m): exp(w u - |u|^2 / 2) / sqrt(m)."""
        w = self.w.to(u.dtype)  # a bf16/fp16 model still draws its features in u's (wide) dtype
        return torch.exp(u @ w.t() - (u * u).sum(-1, keepdim=True) / 2) / math.sqrt(self.m)

    def attention(self, x):
        k, q, v = self.kqv(x).split(self.emb, dim=-1)  # the official order is k, q, v
        # exp() of unnormalised features overflows in half precision: this part runs in fp32 (or wider).
        wide = torch.promote_types(k.dtype, torch.float32)
        with _no_autocast(x.device):
            kp, qp = self.random_features(k.to(wide)), self.random_features(q.to(wide))  # (B, T, m)
            kv = kp.transpose(1, 2) @ v.to(wide)  # (B, m, emb)
            den = qp @ kp.sum(dim=1).unsqueeze(-1)  # (B, T, 1)
            y = (qp @ kv) / (den + self.epsilon)
        return v + self.dp(self.proj(y.to(v.dtype)))

    def forward(self, x):
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenAttention(nn.Module):
    """Single-head attention from width dim to in_dim with the residual taken from v (official names
    qkv, attn_drop, proj, proj_drop). The official code scales the logits by dim**-0.5, the INPUT width
    (e.g. 147 for 3x7x7 patches), not in_dim**-0.5; kept, since its weights were trained so."""

    def __init__(self, dim, in_dim, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, backend=None):
        super().__init__()
        self.in_dim = in_dim
        self.scale = qk_scale or dim**-0.5
        self.backend = backend
        self.act_quant = None  # rounds the attention core; set by vitfast.quant.prepare_qat
        self.qkv = nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(in_dim, in_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = split_heads(self.qkv(x), 3, 1)  # (B, 1, N, d)
        out, _ = attention_core(q, k, v, self.scale, None, self.attn_drop.p if self.training else 0.0,
                                backends.resolve(self.backend), act_quant=self.act_quant)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, self.in_dim)))
        return v.squeeze(1) + out


class TokenTransformer(nn.Module):
    """The T2T module's transformer layer (official names norm1, attn, norm2, mlp)."""

    def __init__(self, dim, in_dim, mlp_ratio=1.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, backend=None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = TokenAttention(dim, in_dim, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                   proj_drop=drop, backend=backend)
        self.norm2 = norm_layer(in_dim)
        self.mlp = Mlp(in_features=in_dim, hidden_features=int(in_dim * mlp_ratio), out_features=in_dim,
                       act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class T2TModule(nn.Module):
    """Image -> tokens: soft split, (T2T layer, fold, soft split) twice, linear projection.

    first_split is the (kernel, stride, padding) of the first soft split: (7, 4, 2) in T2T-ViT (a 1/16
    grid), (11, 6, 5) and (14, 8, 3) in DVT's 10x10 and 7x7 token stages at 224."""

    def __init__(self, img_size=224, tokens_type="performer", in_chans=3, embed_dim=768, token_dim=64,
                 first_split=T2T_SPLITS[0], backend=None):
        super().__init__()
        if tokens_type not in TOKENS_TYPES:
            raise ValueError(f"tokens_type must be one of {TOKENS_TYPES}, got {tokens_type!r}")
        self.img_size = to_2tuple(img_size)
        self.splits = (tuple(first_split),) + T2T_SPLITS[1:]
        k0 = self.splits[0][0]
        self.soft_split0, self.soft_split1, self.soft_split2 = (
            nn.Unfold(kernel_size=k, stride=s, padding=p) for k, s, p in self.splits)
        if tokens_type == "performer":
            self.attention1 = TokenPerformer(dim=in_chans * k0 * k0, in_dim=token_dim, kernel_ratio=0.5)
            self.attention2 = TokenPerformer(dim=token_dim * 3 * 3, in_dim=token_dim, kernel_ratio=0.5)
        else:
            self.attention1 = TokenTransformer(dim=in_chans * k0 * k0, in_dim=token_dim, backend=backend)
            self.attention2 = TokenTransformer(dim=token_dim * 3 * 3, in_dim=token_dim, backend=backend)
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)
        grid = self.img_size
        for split in self.splits:
            grid = split_grid(grid, *split)
        if min(grid) < 1:
            raise ValueError(f"img_size {self.img_size} is too small for the soft splits {self.splits}")
        self.grid_size = grid
        self.num_patches = grid[0] * grid[1]

    def forward(self, x):
        grid = split_grid(x.shape[-2:], *self.splits[0])
        x = self.attention1(self.soft_split0(x).transpose(1, 2))  # (B, h*w, token_dim)
        x = self.soft_split1(x.transpose(1, 2).reshape(x.shape[0], -1, *grid)).transpose(1, 2)
        grid = split_grid(grid, *self.splits[1])
        x = self.attention2(x)
        x = self.soft_split2(x.transpose(1, 2).reshape(x.shape[0], -1, *grid)).transpose(1, 2)
        return self.project(x)


class T2TViT(nn.Module):
    """T2T-ViT: T2T module, class token, sinusoidal position embedding, `depth` pre-norm blocks, norm,
    linear head on the class token."""

    def __init__(self, img_size=224, tokens_type="performer", in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, norm_layer=None, act_layer=None, token_dim=64, first_split=T2T_SPLITS[0],
                 block_fn=Block, backend=None):
        super().__init__()
        norm_layer = norm_layer or nn.LayerNorm
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.tokens_to_token = T2TModule(img_size=img_size, tokens_type=tokens_type, in_chans=in_chans,
                                         embed_dim=embed_dim, token_dim=token_dim, first_split=first_split,
                                         backend=backend)
        self.grid_size = self.tokens_to_token.grid_size
        num_patches = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sinusoid_table(num_patches + 1, embed_dim), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        self.act_quant = None  # rounds the embedded tokens (cls/pos concat and add); set by prepare_qat
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList([
            block_fn(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                     attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer,
                     act_layer=act_layer or nn.GELU, backend=backend)
            for i in range(depth)])
        if qk_scale is not None:  # the official qk_scale argument overrides head_dim**-0.5
            for blk in self.blocks:
                blk.attn.scale = qk_scale
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        if self.cls_token.device.type == "meta":
            return
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linear_norm(self)

    @torch.jit.ignore
    def no_weight_decay(self):
        """Parameters to keep out of weight decay (pos_embed is fixed anyway)."""
        return {"cls_token", "pos_embed"}

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        if global_pool not in (None, "", "token"):
            raise ValueError(f"T2T-ViT pools its class token; global_pool={global_pool!r} is not supported")
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def patch_stride(self):
        """Pixels per token along a side (the soft splits' strides multiplied): crop sizes are multiples."""
        return math.prod(stride for _, stride, _ in self.splits_of_tokens())

    input_multiple = None  # the side an input under dynamic_img_size must be a multiple of: patch_stride

    def splits_of_tokens(self):
        return self.tokens_to_token.splits

    def grid_of(self, x):
        """The token grid the soft splits make of an image batch x."""
        grid = tuple(x.shape[-2:])
        for split in self.splits_of_tokens():
            grid = split_grid(grid, *split)
        return grid

    def set_dynamic_img_size(self, enable=True):
        """Take any image size the soft splits divide (multi-crop): the sinusoidal position table is
        resampled bicubically to each input's token grid, as a learned one is for ViT."""
        self.dynamic_img_size = enable

    def embed_tokens(self, x):
        """Images -> (B, 1 + h*w, embed_dim) trunk input: T2T tokens, class token, position embedding."""
        pos_embed = self.pos_embed
        if getattr(self, "dynamic_img_size", False):
            check_image(x, self.in_chans, multiple_of=(self.input_multiple or self.patch_stride,) * 2,
                        who=type(self).__name__)
            grid = self.grid_of(x)
            if grid != tuple(self.grid_size):
                pos_embed = resample_abs_pos_embed(pos_embed, grid, 1, old_grid=self.grid_size)
        else:
            check_image(x, self.in_chans, self.img_size, who=type(self).__name__)
        x = self.tokens_to_token(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos_embed
        if self.act_quant is not None:
            x = self.act_quant(x)
        return self.pos_drop(x)

    def forward_features(self, x, return_attn=None):
        """Token features after the final norm; with return_attn ("logits" | "probs") also the list of
        every trunk block's (B, H, N, N) attention, from the same forward pass."""
        x = self.embed_tokens(x)
        x, attns = run_blocks(self.blocks, x, return_attn)
        x = self.norm(x)
        return (x, attns) if return_attn else x

    def forward_head(self, x, pre_logits=False):
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def unwrap_state_dict(state_dict):
    """The weights inside an official training checkpoint ('model_state_dict' in DVT's, 'state_dict'
    in T2T-ViT's timm-saved ones), without DataParallel's 'module.' prefixes."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def checkpoint_filter_fn(state_dict, model):
    """Official T2T-ViT checkpoints -> this model. The parameter names are the official ones, so this
    only unwraps the checkpoint and, when img_size differs from the checkpoint's, resamples pos_embed
    bicubically as the official transfer-learning code does."""
    out = unwrap_state_dict(state_dict)
    pos = out.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape and pos.shape[-1] == model.pos_embed.shape[-1]:
        out["pos_embed"] = resample_abs_pos_embed(pos, model.grid_size, num_prefix_tokens=1)
    return out


T2TViT.checkpoint_filter_fn = staticmethod(checkpoint_filter_fn)

# name: (tokens_type, embed_dim, depth, num_heads, mlp_ratio) — the official configurations.
_T2T = {
    "t2t_vit_7": ("performer", 256, 7, 4, 2.0), "t2t_vit_10": ("performer", 256, 10, 4, 2.0),
    "t2t_vit_12": ("performer", 256, 12, 4, 2.0), "t2t_vit_14": ("performer", 384, 14, 6, 3.0),
    "t2t_vit_19": ("performer", 448, 19, 7, 3.0), "t2t_vit_24": ("performer", 512, 24, 8, 3.0),
    "t2t_vit_t_14": ("transformer", 384, 14, 6, 3.0), "t2t_vit_t_19": ("transformer", 448, 19, 7, 3.0),
    "t2t_vit_t_24": ("transformer", 512, 24, 8, 3.0),
}


def _register_t2t(name, tokens_type, dim, depth, heads, mlp_ratio):
    return register_variant(
        name, T2TViT, dict(tokens_type=tokens_type, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio),
        model_config(224, crop_pct=0.9, interpolation="bicubic"),
        f"T2T-ViT ({tokens_type} in the T2T module): width {dim}, depth {depth}, {heads} heads, MLP ratio {mlp_ratio:g}.")


for _name, _args in _T2T.items():
    globals()[_name] = _register_t2t(_name, *_args)
