"""Google's official ViT checkpoints (.npz, google-research/vision_transformer): ViT-B/16, B/32, L/16,
L/32, H/14 and R50+ViT-B/16, imagenet21k and imagenet21k+imagenet2012, loaded into vitfast's
VisionTransformer and the R50 hybrid, and written back in the same layout.

The layout (Flax parameter paths joined by '/', kernels stored input-major):
  embedding/{kernel (kh, kw, in, D) HWIO, bias}      cls (1, 1, D)
  Transformer/posembed_input/pos_embedding (1, 1 + H*W, D)
  Transformer/encoderblock_{i}/LayerNorm_0, LayerNorm_2 /{scale, bias}            -> norm1, norm2
  Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/{query,key,value}/kernel (D, heads, hd),
      .../bias (heads, hd), .../out/kernel (heads, hd, D), .../out/bias (D)        -> attn.qkv, attn.proj
  Transformer/encoderblock_{i}/MlpBlock_3/Dense_{0,1}/{kernel (in, out), bias}     -> mlp.fc1, mlp.fc2
  Transformer/encoder_norm/{scale, bias}   head/{kernel (D, classes), bias}
  R50 hybrid: conv_root/kernel, gn_root/{scale,bias}, block{s}/unit{u}/{conv1..3, conv_proj}/kernel and
      .../{gn1..3, gn_proj}/{scale,bias}. GroupNorm parameters are written (1, 1, 1, C), the shape of the
      flax.nn-era R50 files (timm's and jeonsworld's loaders flatten it); (C,) is read as well.
Prefixes 'opt/target/' and 'params/' (how some files nest the tree) are recognised.

Decisions:
- The position embedding is resampled (vitfast.layers.resample_abs_pos_embed, bicubic) when the
  model's grid differs from the file's: a 224 checkpoint loads into a 384 model.
- The head is left as the model initialised it ("fresh", listed in the result and warned about) when
  the file's class count differs from the model's, when the file has no head, or when the file has a
  `pre_logits` layer. imagenet21k files have one: Dense(D, D) + tanh between the class token and the
  head, the paper's pre-training "representation layer". vitfast's ViT, like timm's and jeonsworld's,
  has none (fine-tuning drops it, as the paper does), so pre_logits is not loaded (listed under
  ignored_keys) and the 21k head, which was trained on top of it, would give wrong logits without
  it; the features (forward_features, forward_head(pre_logits=True)) are the checkpoint's.
- Anything else missing, mismatched in shape or unexpected raises one NpzMismatchError naming every
  key (strict=True), or is skipped and returned (strict=False)."""
import os
import warnings
from collections import namedtuple

import numpy as np
import torch
from torch import nn

from ..layers import resample_abs_pos_embed
from ..files import atomic_write
from .state_dict import CheckpointMismatchError

__all__ = ["load_npz", "save_npz", "NpzLoadResult", "NpzMismatchError", "npz_layout"]

NpzLoadResult = namedtuple("NpzLoadResult", ["missing_keys", "unexpected_keys", "mismatched_keys", "fresh_keys",
                                             "ignored_keys", "resized_keys"])
NpzLoadResult.__doc__ = """What load_npz did. missing_keys / unexpected_keys: file keys (Google's names) the
model needs but the file lacks / the file has but the model cannot use; mismatched_keys: (file key, shape in
the file, shape the model needs in the file's layout); fresh_keys: model parameters left as initialised (the
head, when its classes differ); ignored_keys: file keys deliberately not loaded (pre_logits, an unused head);
resized_keys: model parameters resampled to the model's size (pos_embed)."""

PREFIXES = ("", "opt/target/", "params/")


class NpzMismatchError(CheckpointMismatchError):
    """A Google .npz file that does not fit the model; keys are the file's, shapes in its layout."""


# ---------------------------------------------------------------------------------------------------
# The mapping: one entry per model tensor, with how it is written to (save) and read from (load) the
# file's arrays. Both directions are plain tensor reshapes/transposes, so running `save` on a meta
# tensor gives the shapes the file must have without touching any data.
Entry = namedtuple("Entry", ["name", "keys", "save", "load", "vector"])


def _dense(name, key):  # Linear weight (out, in) <-> kernel (in, out)
    return Entry(name, [key], lambda w: [w.t()], lambda a: a[0].t(), False)


def _conv(name, key):  # Conv2d weight OIHW <-> kernel HWIO
    return Entry(name, [key], lambda w: [w.permute(2, 3, 1, 0)], lambda a: a[0].permute(3, 2, 0, 1), False)


def _same(name, key, vector=True):  # biases, norm scales, cls token, position embedding
    return Entry(name, [key], lambda w: [w], lambda a: a[0], vector)


def _group_norm(name, key):  # flax.nn stored GroupNorm scale/bias as (1, 1, 1, C)
    return Entry(name, [key], lambda w: [w.reshape(1, 1, 1, -1)], lambda a: a[0].reshape(-1), True)


def _qkv_weight(name, keys, heads):  # (3D, D) <-> three (D, heads, hd) kernels
    def save(w):
        return [part.t().reshape(part.shape[1], heads, -1) for part in w.chunk(3, dim=0)]

    return Entry(name, keys, save, lambda a: torch.cat([k.reshape(k.shape[0], -1).t() for k in a]), False)


def _qkv_bias(name, keys, heads):  # (3D,) <-> three (heads, hd)
    return Entry(name, keys, lambda b: [part.reshape(heads, -1) for part in b.chunk(3)],
                 lambda a: torch.cat([k.reshape(-1) for k in a]), False)


def _out_weight(name, key, heads):  # (D, D) <-> kernel (heads, hd, D)
    return Entry(name, [key], lambda w: [w.t().reshape(heads, -1, w.shape[0])],
                 lambda a: a[0].reshape(-1, a[0].shape[-1]).t(), False)


def npz_layout(model):
    """Entries mapping every tensor of `model` (a VisionTransformer or the R50 hybrid) that Google's
    layout holds to its file keys; the head is not among them (load_npz treats it apart)."""
    for attr in ("patch_embed", "blocks", "pos_embed"):
        if not hasattr(model, attr):
            raise ValueError(f"Google .npz checkpoints hold Vision Transformers; {type(model).__name__} has no "
                             f"{attr!r}")
    out = []
    pe = model.patch_embed
    if hasattr(pe, "backbone"):  # R50 hybrid: ResNet-V2 stem and stages
        out += [_conv("patch_embed.backbone.stem.conv.weight", "conv_root/kernel"),
                _group_norm("patch_embed.backbone.stem.norm.weight", "gn_root/scale"),
                _group_norm("patch_embed.backbone.stem.norm.bias", "gn_root/bias")]
        for s, stage in enumerate(getattr(pe.backbone, "stages", [])):
            for u, block in enumerate(stage.blocks):
                p, g = f"patch_embed.backbone.stages.{s}.blocks.{u}.", f"block{s + 1}/unit{u + 1}/"
                convs = [(f"conv{r}", f"norm{r}", f"conv{r}", f"gn{r}") for r in (1, 2, 3)]
                if getattr(block, "downsample", None) is not None:
                    convs.append(("downsample.conv", "downsample.norm", "conv_proj", "gn_proj"))
                for conv, norm, gconv, gnorm in convs:
                    out += [_conv(f"{p}{conv}.weight", f"{g}{gconv}/kernel"),
                            _group_norm(f"{p}{norm}.weight", f"{g}{gnorm}/scale"),
                            _group_norm(f"{p}{norm}.bias", f"{g}{gnorm}/bias")]
    out += [_conv("patch_embed.proj.weight", "embedding/kernel"), _same("patch_embed.proj.bias", "embedding/bias")]
    out += [_same("cls_token", "cls", vector=False),
            _same("pos_embed", "Transformer/posembed_input/pos_embedding", vector=False)]
    for i, block in enumerate(model.blocks):
        p, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha, heads = g + "MultiHeadDotProductAttention_1/", block.attn.num_heads
        out += [_same(p + "norm1.weight", g + "LayerNorm_0/scale"), _same(p + "norm1.bias", g + "LayerNorm_0/bias"),
                _qkv_weight(p + "attn.qkv.weight", [f"{mha}{n}/kernel" for n in ("query", "key", "value")], heads),
                _qkv_bias(p + "attn.qkv.bias", [f"{mha}{n}/bias" for n in ("query", "key", "value")], heads),
                _out_weight(p + "attn.proj.weight", mha + "out/kernel", heads),
                _same(p + "attn.proj.bias", mha + "out/bias"),
                _same(p + "norm2.weight", g + "LayerNorm_2/scale"), _same(p + "norm2.bias", g + "LayerNorm_2/bias")]
        for r in (0, 1):
            out += [_dense(f"{p}mlp.fc{r + 1}.weight", f"{g}MlpBlock_3/Dense_{r}/kernel"),
                    _same(f"{p}mlp.fc{r + 1}.bias", f"{g}MlpBlock_3/Dense_{r}/bias")]
    out += [_same("norm.weight", "Transformer/encoder_norm/scale"), _same("norm.bias", "Transformer/encoder_norm/bias")]
    own = model.state_dict()
    return [e for e in out if e.name in own]  # e.g. no qkv bias, no final norm: those keys are unexpected


def _head(model):
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Linear) else None


def _uncovered(model, entries):
    covered = {e.name for e in entries} | ({"head.weight", "head.bias"} if _head(model) is not None else set())
    return [k for k in model.state_dict() if k not in covered]


def _expected_shapes(entry, tensor):
    return [tuple(t.shape) for t in entry.save(torch.empty(tensor.shape, device="meta"))]


def _fits(got, want, vector):
    """Same shape; for vectors, any shape with the same non-unit sides ((C,) and (1, 1, 1, C) alike)."""
    if tuple(got) == tuple(want):
        return True
    strip = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    return vector and strip(got) == strip(want)


def _open(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint_path {path!r} does not exist")
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path!r} is not a readable .npz archive ({e}); Google's ViT checkpoints are .npz files "
                         "of named arrays, .pth/.safetensors files go through load_checkpoint") from e
    if not isinstance(w, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} holds a single array, not a .npz archive of named parameters")
    files = set(w.files)
    prefix = next((p for p in PREFIXES if f"{p}embedding/kernel" in files), None)
    if prefix is None:
        w.close()
        raise ValueError(f"{path!r} has no 'embedding/kernel': not a Google ViT checkpoint "
                         f"(it holds {', '.join(sorted(files)[:8])}{', ...' if len(files) > 8 else ''})")
    if f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in files or f"{prefix}pos_embedding" in files:
        w.close()
        raise ValueError(f"{path!r} is a big_vision checkpoint (stacked encoder blocks / top-level pos_embedding); "
                         "load_npz reads google-research/vision_transformer's layout only")
    return w, prefix


@torch.no_grad()
def load_npz(model, path, strict=True):
    """Load a Google ViT .npz checkpoint into `model` (vitfast VisionTransformer or R50 hybrid).

    Resamples the position embedding to the model's grid; leaves the head fresh (with a warning) when
    the file's classes differ, the file has no head or has a pre_logits layer. strict: raise one
    NpzMismatchError listing every missing, mismatched and unexpected key; strict=False loads what fits.
    Returns an NpzLoadResult."""
    entries = npz_layout(model)
    uncovered = _uncovered(model, entries)
    if uncovered and strict:
        raise ValueError(f"{type(model).__name__} has parameters with no place in Google's .npz layout: "
                         f"{', '.join(uncovered)} (pass strict=False to load the rest and leave them as they are)")
    w, prefix = _open(path)
    source = f"Google .npz checkpoint {os.fspath(path)!r}"
    try:
        files = {k[len(prefix):] for k in w.files if k.startswith(prefix)}
        outside = sorted(k for k in w.files if not k.startswith(prefix))  # e.g. optimizer state beside opt/target
        own = model.state_dict()
        missing, mismatched, resized, updates, used = [], [], [], {}, set()
        for e in entries:
            param = own[e.name]
            absent = [k for k in e.keys if k not in files]
            if absent:
                missing += absent
                continue
            used.update(e.keys)
            arrays = [torch.from_numpy(np.asarray(w[prefix + k])) for k in e.keys]
            want = _expected_shapes(e, param)
            if e.name == "pos_embed" and tuple(arrays[0].shape) != want[0]:
                value = _resample_pos_embed(model, arrays[0], want[0])
                if value is None:
                    mismatched.append((e.keys[0], tuple(arrays[0].shape), want[0]))
                else:
                    updates[e.name] = value
                    resized.append(e.name)
                continue
            bad = [(k, tuple(a.shape), s) for k, a, s in zip(e.keys, arrays, want) if not _fits(a.shape, s, e.vector)]
            if bad:
                mismatched += bad
                continue
            arrays = [a.reshape(s) for a, s in zip(arrays, want)]
            updates[e.name] = e.load(arrays).reshape(param.shape)

        fresh, ignored, reasons, notes = list(uncovered), list(outside), [], []
        pre_logits = sorted(k for k in files if k.startswith("pre_logits/"))
        if pre_logits:
            ignored += pre_logits
            used.update(pre_logits)
            notes.append("its pre_logits (representation) layer is not loaded: this model has none")
        head_keys = [k for k in ("head/kernel", "head/bias") if k in files]
        used.update(head_keys)
        head = _head(model)
        if head is None:
            ignored += head_keys
        else:
            if len(head_keys) < 2:
                reasons.append("the file has no head/kernel and head/bias")
            elif pre_logits:
                reasons.append("the file's head was trained on top of its pre_logits layer")
            else:
                kernel, bias = (torch.from_numpy(np.asarray(w[prefix + k])) for k in head_keys)
                if kernel.ndim != 2 or kernel.shape[0] != head.in_features or tuple(bias.shape) != kernel.shape[1:]:
                    mismatched.append(("head/kernel", tuple(kernel.shape), (head.in_features, head.out_features)))
                elif kernel.shape[1] != head.out_features:
                    reasons.append(f"the file's classifier has {kernel.shape[1]} classes, the model's "
                                   f"{head.out_features}")
                else:
                    updates["head.weight"], updates["head.bias"] = kernel.t(), bias
            if reasons:
                fresh += ["head.weight", "head.bias"]
                ignored += head_keys
        unexpected = sorted(files - used)
    finally:
        w.close()

    result = NpzLoadResult(missing_keys=sorted(missing), unexpected_keys=unexpected, mismatched_keys=mismatched,
                           fresh_keys=fresh, ignored_keys=sorted(ignored), resized_keys=resized)
    if strict and (missing or unexpected or mismatched):
        raise NpzMismatchError(result, source)
    for name, value in updates.items():
        own[name].copy_(value)
    if reasons:
        notes.append(f"the head is left freshly initialised ({'; '.join(reasons)})")
    if notes:
        warnings.warn(f"load_npz: {source}: {'; '.join(notes)}", stacklevel=2)
    return result


def _resample_pos_embed(model, pos, want):
    """The file's (1, prefix + h*w, D) position embedding on the model's grid, or None if it cannot be."""
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != want[2]:
        return None
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = tuple(model.patch_embed.grid_size)
    try:
        out = resample_abs_pos_embed(pos, grid, num_prefix_tokens=prefix)
    except ValueError:  # the file's grid is not square
        return None
    return out if tuple(out.shape) == tuple(want) else None


def save_npz(model, path):
    """Write `model`'s weights as a Google ViT .npz (the layout load_npz and timm's and jeonsworld's
    loaders read), fp32, atomically. Raises ValueError if the model has parameters the layout cannot
    hold (a distillation token, layer scale, ...)."""
    entries = npz_layout(model)
    uncovered = _uncovered(model, entries)
    if uncovered:
        raise ValueError(f"{type(model).__name__} has parameters with no place in Google's .npz layout: "
                         f"{', '.join(uncovered)}")
    own = model.state_dict()
    arrays = {}
    for e in entries:
        for key, t in zip(e.keys, e.save(own[e.name].detach().to("cpu", torch.float32))):
            arrays[key] = t.contiguous().numpy()
    head = _head(model)
    if head is not None:
        arrays["head/kernel"] = head.weight.detach().to("cpu", torch.float32).t().contiguous().numpy()
        arrays["head/bias"] = head.bias.detach().to("cpu", torch.float32).numpy()

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)

    atomic_write(path, write)
