"""ConViT (d'Ascoli et al. 2021): a DeiT whose first layers use gated positional self-attention (GPSA),

    attn = (1 − σ(gating)) · softmax(q kᵀ / √d) + σ(gating) · softmax(pos_proj(r_ij)),  renormalised,

where r_ij = (Δx, Δy, Δx² + Δy²) is the offset between patches i and j and pos_proj is initialised so that
each head starts as one tap of a √H × √H convolution (locality strength 1, "local init"). The class token
joins after the GPSA layers; the remaining layers are ordinary multi-head self-attention.

Module and parameter names are timm's (timm.models.convit), which are in turn those of the official
facebookresearch/convit code, so timm's and the official checkpoints (flat state dicts) load unchanged
with strict=True and ours load into timm.

Backends: MHSA layers go through vitfast.layers.attention_core (eager / sdpa / vitfast). GPSA always has
an explicit positional softmax; its content part is explicit under "eager" (timm's exact formula) and
fused under "sdpa"/"vitfast", where the output is computed as
    (1 − σ) · attention(q, k, v) + σ · (softmax(pos) @ v),
which equals the renormalised mixture because both softmaxes sum to one (the renormalisation divides by
1 up to rounding, and contributes nothing to the gradient). That form never materialises the (B, H, N, N)
content probabilities, and the positional probabilities are one (1, H, N, N) map shared by the batch.
Attention dropout in training and return_attn take the explicit path, since they act on the mixture.

Quantization-aware training: GPSA, MHSA, Block and ConVit carry the `act_quant` hooks that
vitfast.quant.prepare_qat sets (None otherwise). GPSA and MHSA round their whole attention core (q, k,
v, logits, both softmaxes, the mixture, attn·v; explicit path), Block the two residual sums, ConVit the
embedded tokens and the sequence the class token joins."""
import math
from functools import partial

import torch
from torch import nn

from ..layers.init import init_linear_norm
from ..layers import (DropPath, Mlp, PatchEmbed, attention_core, check_image, resample_abs_pos_embed, run_blocks,
                      split_heads, to_2tuple)
from ..layers import backend as backends
from .registry import model_config, register_variant

__all__ = ["ConVit", "GPSA", "MHSA", "Block", "relative_positions", "checkpoint_filter_fn"]


def relative_positions(grid_size, dtype=torch.float32, device=None):
    """(1, N, N, 3) table over the N = H·W patches of a (H, W) grid, flattened row-major as PatchEmbed
    does: entry [0, i, j] = (Δx, Δy, Δx² + Δy²) with Δx = col_j − col_i, Δy = row_j − row_i. On a square
    grid this is timm's / the official get_rel_indices exactly; non-square grids are handled too."""
    h, w = to_2tuple(grid_size)
    idx = torch.arange(h * w, device=device)
    rows, cols = idx.div(w, rounding_mode="floor"), idx % w
    dx = (cols[None, :] - cols[:, None]).double()
    dy = (rows[None, :] - rows[:, None]).double()
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1).unsqueeze(0).to(dtype)


def _square_grid(n, who):
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{who} was built without grid_size and got {n} tokens, which is not a square grid; "
                         f"pass grid_size=(H, W)")
    return side, side


def _check_return_attn(return_attn, who):
    if return_attn not in (None, "probs"):
        raise ValueError(f"{who}: return_attn must be None or 'probs' (GPSA mixes two softmaxes, so ConViT has "
                         f"no single attention logits), got {return_attn!r}")


def _identity(x):
    return x


def _mean_distance(attn_map, distances):
    """Per-head attention-weighted distance, averaged over queries (the paper's "nonlocality")."""
    return torch.einsum("nm,hnm->h", distances, attn_map) / distances.shape[0]


class GPSA(nn.Module):
    """Gated positional self-attention. grid_size: the (H, W) patch grid (the model passes it; without it
    the grid is taken to be square and recomputed per call). backend: None (global) | eager | sdpa | vitfast."""

    act_quant_role = "operand"

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, locality_strength=1.0,
                 grid_size=None, backend=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.dim = dim
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.locality_strength = locality_strength
        self.backend = backend
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.act_quant = None  # set by vitfast.quant.prepare_qat: rounds the attention core (explicit path)
        self.grid_size = to_2tuple(grid_size) if grid_size is not None else None
        # Not persistent (timm's and the official state dicts have no such key); follows .to(device, dtype).
        rel = relative_positions(self.grid_size) if self.grid_size is not None else None
        self.register_buffer("rel_indices", rel, persistent=False)

    @torch.no_grad()
    def local_init(self):
        """timm's local_init: v = identity, and head h = h1 + k·h2 of a k × k kernel (k = ⌊√H⌋, centre c)
        gets pos_proj row (2(h2 − c), 2(h1 − c), −1) · locality_strength, i.e. positional logits
        −|(Δx, Δy) − (h2 − c, h1 − c)|² + const: attention centred on that offset."""
        self.v.weight.copy_(torch.eye(self.dim))
        kernel = int(self.num_heads**0.5)
        center = (kernel - 1) / 2 if kernel % 2 == 0 else kernel // 2
        for h1 in range(kernel):
            for h2 in range(kernel):
                row = h1 + kernel * h2
                self.pos_proj.weight[row, 2] = -1
                self.pos_proj.weight[row, 1] = 2 * (h1 - center)
                self.pos_proj.weight[row, 0] = 2 * (h2 - center)
        self.pos_proj.weight.mul_(self.locality_strength)

    def _rel_indices(self, n):
        if self.rel_indices is not None:
            grid = getattr(self, "input_grid", None)  # another image size (the model's dynamic_img_size)
            if self.rel_indices.shape[1] != n and grid is not None and grid[0] * grid[1] == n:
                return relative_positions(grid, self.qk.weight.dtype, self.qk.weight.device)
            if self.rel_indices.shape[1] != n:
                raise ValueError(f"GPSA was built for a {self.grid_size[0]}x{self.grid_size[1]} patch grid "
                                 f"({self.rel_indices.shape[1]} tokens), got {n} tokens")
            return self.rel_indices
        return relative_positions(_square_grid(n, "GPSA"), self.qk.weight.dtype, self.qk.weight.device)

    def positional_attention(self, n):
        """softmax over keys of pos_proj(r_ij): (1, H, N, N), the same for every image."""
        r = self.act_quant or _identity
        return r(r(self.pos_proj(self._rel_indices(n))).permute(0, 3, 1, 2).softmax(dim=-1))

    def _qk(self, x):
        return split_heads(self.qk(x), 2, self.num_heads)

    def _mixture(self, x):
        """The renormalised gated mixture, before attention dropout: (B, H, N, N)."""
        r = self.act_quant or _identity
        q, k = self._qk(x)
        content = r(r((r(q) @ r(k).transpose(-2, -1)) * self.scale).softmax(dim=-1))
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * content + gate * self.positional_attention(x.shape[1])
        return r(attn / attn.sum(dim=-1, keepdim=True))

    def get_attention(self, x):
        """timm's name: the attention probabilities (after attention dropout), (B, H, N, N)."""
        return self.attn_drop(self._mixture(x))

    def get_attention_map(self, x, return_map=False):
        """timm's diagnostic: per-head mean attention distance in patches (and the batch-mean map)."""
        attn_map = self.get_attention(x).mean(0)
        dist = _mean_distance(attn_map, self._rel_indices(x.shape[1])[0, :, :, 2].sqrt())
        return (dist, attn_map) if return_map else dist

    def forward(self, x, return_attn=None):
        """x: (B, N, C) patch tokens. return_attn="probs" also returns the (B, H, N, N) mixture."""
        _check_return_attn(return_attn, "GPSA")
        B, N, C = x.shape
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        backend = backends.resolve(self.backend)
        attn = None
        if (backend == "eager" or return_attn or (self.training and self.attn_drop.p > 0)
                or self.act_quant is not None):
            attn = self._mixture(x)
            out = (self.act_quant or _identity)(self.attn_drop(attn) @ (self.act_quant or _identity)(v))
        else:
            q, k = self._qk(x)
            content, _ = attention_core(q, k, v, self.scale, backend=backend)
            gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
            out = (1.0 - gate) * content + gate * (self.positional_attention(N) @ v)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
        return (out, attn) if return_attn else out


class MHSA(nn.Module):
    """Multi-head self-attention with ConViT's names (qkv, attn_drop, proj, proj_drop)."""

    act_quant_role = "operand"

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, backend=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.backend = backend
        self.act_quant = None  # set by vitfast.quant.prepare_qat: rounds the attention core (eager path)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, return_attn=None):
        _check_return_attn(return_attn, "MHSA")
        B, N, C = x.shape
        q, k, v = split_heads(self.qkv(x), 3, self.num_heads)
        out, attn = attention_core(q, k, v, self.scale, None, self.attn_drop.p if self.training else 0.0,
                                   backends.resolve(self.backend), return_attn, act_quant=self.act_quant)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
        return (out, attn) if return_attn else out

    def get_attention_map(self, x, grid_size=None, return_map=False):
        """Per-head mean attention distance over the patch tokens (a leading class token, present when
        N = H·W + 1, is left out of the map); grid_size defaults to a square grid."""
        B, N, C = x.shape
        _, attn = self.forward(x, return_attn="probs")
        attn_map = attn.mean(0)
        grid = to_2tuple(grid_size) if grid_size is not None else None
        if grid is None:
            grid = _square_grid(N - 1, "MHSA") if math.isqrt(N) ** 2 != N else _square_grid(N, "MHSA")
        if N == grid[0] * grid[1] + 1:
            attn_map = attn_map[:, 1:, 1:]
        dist = _mean_distance(attn_map, relative_positions(grid, attn_map.dtype, attn_map.device)[0, :, :, 2].sqrt())
        return (dist, attn_map) if return_map else dist


class Block(nn.Module):
    """ConViT's block (timm names: norm1, attn, drop_path, norm2, mlp); attn is GPSA or MHSA. One DropPath
    module serves both residual branches, drawing a fresh mask on each call, as in timm."""

    act_quant_role = "output"

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, proj_drop=0.0, attn_drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, use_gpsa=True, locality_strength=1.0, grid_size=None,
                 backend=None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.use_gpsa = use_gpsa
        if use_gpsa:
            self.attn = GPSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                             locality_strength=locality_strength, grid_size=grid_size, backend=backend)
        else:
            self.attn = MHSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                             backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.act_quant = None  # rounds the residual sums; set by vitfast.quant.prepare_qat

    def forward(self, x, return_attn=None):
        """Returns x, or (x, attention probabilities) when return_attn="probs"."""
        y = self.attn(self.norm1(x), return_attn=return_attn)
        y, attn = y if return_attn else (y, None)
        r = self.act_quant or _identity
        x = r(x + self.drop_path(y))
        x = r(x + self.drop_path(self.mlp(self.norm2(x))))
        return (x, attn) if return_attn else x


class ConVit(nn.Module):
    """ConViT. embed_dim is the full width (timm's ConVit multiplies its embed_dim argument by num_heads;
    here the registered models pass 48 · num_heads). local_up_to_layer: how many leading blocks are GPSA;
    the class token joins before block local_up_to_layer. img_size is fixed by the position embedding and
    GPSA's relative-position table: another size is a ValueError (create the model with img_size=...)."""

    act_quant_role = "output"

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, global_pool="token", embed_dim=768,
                 depth=12, num_heads=16, mlp_ratio=4.0, qkv_bias=False, drop_rate=0.0, pos_drop_rate=0.0,
                 proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, act_layer=None,
                 local_up_to_layer=10, locality_strength=1.0, use_pos_embed=True, backend=None):
        super().__init__()
        if global_pool not in ("", "avg", "token"):
            raise ValueError(f"global_pool must be '', 'avg' or 'token', got {global_pool!r}")
        if not 0 <= local_up_to_layer <= depth:
            raise ValueError(f"local_up_to_layer must be in [0, depth={depth}], got {local_up_to_layer}")
        if global_pool == "token" and local_up_to_layer == depth:
            raise ValueError(f"with local_up_to_layer == depth ({depth}) the class token never joins: use "
                             f"global_pool='avg' or fewer GPSA layers")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.local_up_to_layer, self.locality_strength = local_up_to_layer, locality_strength
        self.use_pos_embed = use_pos_embed
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        # Tokens before the patches in forward_features' output: the class token, if it joined.
        self.num_prefix_tokens = 1 if local_up_to_layer < depth else 0

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        # No class position: the class token joins after the GPSA layers, which are position-aware already.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim)) if use_pos_embed else None
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # timm's float32 rates; meta-safe
        self.blocks = nn.ModuleList([
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], act_layer=act_layer, norm_layer=norm_layer,
                  use_gpsa=i < local_up_to_layer, locality_strength=locality_strength,
                  grid_size=self.patch_embed.grid_size, backend=backend)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.act_quant = None  # rounds the embedded tokens and the class-token join; set by prepare_qat
        self.init_weights()

    def init_weights(self):
        """timm's / the official initialisation: truncated normals (std 0.02), zero biases, unit norms,
        then GPSA's local init (v = identity, convolution-like positional heads)."""
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_linear_norm(self)
        for m in self.modules():
            if isinstance(m, GPSA):
                m.local_init()

    @torch.jit.ignore
    def no_weight_decay(self):
        """pos_embed and cls_token (as timm), plus the GPSA gates: decay would pull every σ(gating) to 1/2.
        (timm's optimizer factory spares them anyway, as 1-D parameters.)"""
        return {"pos_embed", "cls_token"} | {n for n, _ in self.named_parameters() if n.endswith(".gating_param")}

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        if global_pool is not None:
            if global_pool not in ("", "avg", "token"):
                raise ValueError(f"global_pool must be '', 'avg' or 'token', got {global_pool!r}")
            if global_pool == "token" and not self.num_prefix_tokens:
                raise ValueError("global_pool='token' needs the class token, which never joins in this model")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = self.cls_token
        self.head = (nn.Linear(self.embed_dim, num_classes, device=ref.device, dtype=ref.dtype) if num_classes > 0
                     else nn.Identity())
        self.head.train(self.training)

    @property
    def patch_stride(self):
        """Pixels per token along a side: crop sizes for this model are multiples of it."""
        return self.patch_embed.patch_size[0]

    def set_dynamic_img_size(self, enable=True):
        """Take any image size divisible by the patch (multi-crop): the position embedding is resampled
        bicubically and each GPSA layer's relative positions are those of the input's grid."""
        self.patch_embed.strict_img_size = not enable

    def forward_features(self, x, return_attn=None):
        """(B, 1 + N, C) tokens after the final norm (class token first). With return_attn="probs" also the
        list of each block's attention probabilities: (B, H, N, N) for GPSA blocks, (B, H, N+1, N+1) after."""
        native = self.patch_embed.strict_img_size
        if native:
            check_image(x, self.in_chans, self.patch_embed.img_size, who=type(self).__name__)
        _check_return_attn(return_attn, type(self).__name__)
        r = self.act_quant or _identity
        grid = self.patch_embed.grid_of(x)
        x = self.patch_embed(x)
        for blk in self.blocks:
            if isinstance(blk.attn, GPSA):
                blk.attn.input_grid = None if native else grid
        if self.pos_embed is not None:
            pos_embed = self.pos_embed
            if not native and grid != tuple(self.patch_embed.grid_size):
                pos_embed = resample_abs_pos_embed(pos_embed, grid, 0, old_grid=self.patch_embed.grid_size)
            x = x + pos_embed
        x = self.pos_drop(r(x))

        def join_cls_token(i, x):  # the class token enters after the GPSA layers
            if i != self.local_up_to_layer:
                return x
            return r(torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1))

        x, attns = run_blocks(self.blocks, x, return_attn, before=join_cls_token)
        x = self.norm(x)
        return (x, attns) if return_attn else x

    def forward_head(self, x, pre_logits=False):
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict, model):
    """timm and official (facebookresearch/convit) checkpoints use this model's names already: unwrap
    {'model': ...} / {'state_dict': ...}, strip DDP's 'module.' prefixes, and resample the position
    embedding (which has no class position) when the model's img_size differs from the checkpoint's."""
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    elif isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        if k == "pos_embed" and getattr(model, "pos_embed", None) is not None and v.shape != model.pos_embed.shape:
            v = resample_abs_pos_embed(v, model.patch_embed.grid_size, num_prefix_tokens=0)
        out[k] = v
    return out


ConVit.checkpoint_filter_fn = staticmethod(checkpoint_filter_fn)

# name: heads. Width 48 per head, depth 12, GPSA in the first 10 blocks, locality strength 1 (the paper's).
_CONVIT = {"convit_tiny": 4, "convit_small": 9, "convit_base": 16}
_PARAMS = {"convit_tiny": "6M", "convit_small": "27M", "convit_base": "86M"}


def _register_convit(name, heads):
    defaults = dict(img_size=224, patch_size=16, embed_dim=48 * heads, depth=12, num_heads=heads,
                    local_up_to_layer=10, locality_strength=1.0)
    return register_variant(name, ConVit, defaults, model_config(224, crop_pct=0.875),
                            f"ConViT: width {48 * heads}, {heads} heads, 10 GPSA + 2 MHSA blocks, 224x224 input "
                            f"({_PARAMS[name]} parameters).")


for _name, _heads in _CONVIT.items():
    globals()[_name] = _register_convit(_name, _heads)
