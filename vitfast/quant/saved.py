"""8-bit models on disk: save_quantized writes a scaled-recipe convert_ptq model (INT8, FP8_*_SCALED), or
a convert_fp8 chain, as safetensors at 8-bit size; load_quantized rebuilds it without ever holding fp32
weights.

The file holds the model's state dict as it is: each Linear8's 8-bit `weight` (safetensors' I8 / F8_E4M3
/ F8_E5M2), its fp32 `weight_scale`, `input_scale` (static scales) and `bias`, and everything left in
fp32 (embeddings, norms, the emulated patch-embedding convolution); beside it, the static activation
amax of each emulated layer and the model's non-persistent buffers. The metadata names the recipe, the
architecture and the create_model arguments that rebuild it, and which layers are Linear8 or emulated:

    vitfast.format              "quantized-model/1"
    vitfast.recipe, .rounding   e.g. "FP8_E4M3_SCALED", "nearest"
    vitfast.architecture        the registered model name; vitfast.model_kwargs its create_model
                                overrides (JSON), as in save_checkpoint's .safetensors files
    vitfast.linear8, .emulated  JSON lists of module names
    vitfast.fp8_blocks          JSON list of convert_fp8's FP8Block names (the rest of that model bf16)

Loading builds the architecture on the meta device (no memory, no initialisation), swaps in the same
layers and assigns the file's tensors, so an fp32 weight is never materialised.
"""
import json
import os

import torch
from torch import nn

from ..files import (QUANTIZED_FORMAT, atomic_write, file_metadata, is_quantized_file, is_quantized_metadata,
                     model_recipe, to_file_metadata)
from ..models.registry import register_model_file
from .linear8 import Linear8, usable_device
from .recipes import parse_recipe

__all__ = ["save_quantized", "load_quantized", "is_quantized_file"]

_AMAX = "_vitfast.input_amax."
_BUFFER = "_vitfast.buffer."


def _scaled_layers(model):
    """(Linear8 names, names of emulated scaled layers) of a convert_ptq model."""
    from .qat import QATModule
    from .scaled import ScaledRounding

    linear8, emulated = [], []
    for name, m in model.named_modules():
        if isinstance(m, Linear8):
            linear8.append(name)
        elif isinstance(m, QATModule) and isinstance(getattr(m.qat, "input", None), ScaledRounding):
            emulated.append(name)
    return linear8, emulated


def save_quantized(model, path, *, overwrite=False):
    """Write `model` (from convert_ptq with INT8 / FP8_E4M3_SCALED / FP8_E5M2_SCALED, built by
    vitfast.create_model) to the safetensors file `path` at 8-bit size; atomically, and never over an
    existing file unless overwrite=True. Returns the file's size in bytes."""
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    recipe = getattr(model, "qat_recipe", None)
    chain = getattr(model, "fp8_blocks", None)  # a convert_fp8 model: its FP8 blocks' names
    if chain is not None:
        recipe = parse_recipe("FP8_E4M3_SCALED", "recipe")
    if recipe is None or not recipe.is_scaled:
        raise ValueError("model: save_quantized takes a model from convert_ptq(model, 'INT8' | 'FP8_E4M3_SCALED' | "
                         f"'FP8_E5M2_SCALED') or convert_fp8, got one quantized with {recipe or 'nothing'}")
    rebuild = model_recipe(model)
    if rebuild is None:
        raise ValueError("model: save_quantized needs a model built by vitfast.create_model with JSON-representable "
                         "arguments (the file records its architecture and arguments to rebuild it)")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"path: {path} exists; pass overwrite=True to replace it")
    linear8, emulated = _scaled_layers(model)
    fp32_linear = [n for n in emulated if isinstance(model.get_submodule(n), nn.Linear)]
    if fp32_linear:
        raise ValueError(f"model: its linear layers ({fp32_linear[0]}, ...) hold the emulation's fp32 weights "
                         "(convert_ptq(..., emulate=True) or rounding other than 'nearest'); save_quantized stores "
                         "Linear8 layers: convert with emulate=False")
    state = model.state_dict()
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    for name in emulated:
        r = model.get_submodule(name).qat.input
        if r.mode == "static":
            tensors[_AMAX + name] = r.amax.detach().float().reshape(())
    for name, buf in model.named_buffers():
        if name not in state and buf is not None:
            tensors[_BUFFER + name] = buf.detach().to("cpu", copy=True).contiguous()
    meta = to_file_metadata({"format": QUANTIZED_FORMAT, "recipe": recipe.name,
                             "rounding": _rounding_of(model, emulated), **rebuild, "linear8": json.dumps(linear8),
                             "emulated": json.dumps(emulated), "fp8_blocks": json.dumps(chain or [])})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return os.path.getsize(path)


def _rounding_of(model, emulated):
    return model.get_submodule(emulated[0]).qat.input.rounding if emulated else "nearest"


def load_quantized(path, device="cpu", *, architecture=None, create_kwargs=None):
    """The model save_quantized wrote to `path`, on `device`, in eval mode with its 8-bit layers; the
    fp32 weights are never built. `architecture` / `create_kwargs`: what the caller expects (create_model's
    name and overrides); a file of another model, or built with other arguments, is an error."""
    from safetensors.torch import load_file

    from ..models.registry import create_model
    from .qat import scale_layer
    from .scaled import replace_module

    device = usable_device(device)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file: {path}")
    meta = file_metadata(path)
    if not is_quantized_metadata(meta):
        raise ValueError(f"path: {path} is not an 8-bit model written by vitfast.quant.save_quantized")
    arch = meta["architecture"]
    if architecture is not None and architecture != arch:
        raise ValueError(f"checkpoint_path: {path} holds an 8-bit {arch}, not a {architecture}")
    kwargs = {**json.loads(meta["model_kwargs"]), **(create_kwargs or {})}
    recipe = parse_recipe(meta["recipe"], "recipe")
    with torch.device("meta"):
        model = create_model(arch, **kwargs)
    model.eval().requires_grad_(False)
    tensors = load_file(path, device=str(device))
    blocks = json.loads(meta.get("fp8_blocks", "[]"))
    if blocks:  # convert_fp8's chain: its blocks rebuilt on the meta device, the rest in bf16
        from .fp8_chain import FP8Block, convertible_blocks, install_fp8_blocks

        if not set(blocks) <= {n for n, _ in convertible_blocks(model)[0]}:
            raise ValueError(f"path: {path} does not match {arch}: its FP8 blocks {blocks[:3]} are not plain blocks there")
        scales = {k: torch.ones(1, device="meta") for k in ("qkv", "proj", "fc1", "fc2")}
        install_fp8_blocks(model, {n: FP8Block(model.get_submodule(n), scales) for n in blocks})
    for name in json.loads(meta["emulated"]):
        scale_layer(model.get_submodule(name), recipe, meta["rounding"], prequantized=True)
    for name in json.loads(meta["linear8"]):
        old, w = model.get_submodule(name), tensors.get(f"{name}.weight")
        if not isinstance(old, nn.Linear) or w is None:
            raise ValueError(f"path: {path} does not match {arch}: no 8-bit linear layer {name!r} there")
        replace_module(model, name, Linear8(old.in_features, old.out_features, old.bias is not None, w.dtype,
                                            f"{name}.input_scale" in tensors, device="meta"))
    extra = {k: tensors.pop(k) for k in list(tensors) if k.startswith((_AMAX, _BUFFER))}
    try:
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as e:  # shapes: the file's model was built with other arguments
        detail = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"path: {path} does not match {arch} built with {kwargs}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"path: {path} does not match {arch}: missing {result.missing_keys[:5]}, unexpected "
                         f"{result.unexpected_keys[:5]}")
    for key, t in extra.items():
        if key.startswith(_AMAX):
            r = model.get_submodule(key[len(_AMAX):]).qat.input
            r.amax, r.mode = t.cpu(), "static"
        else:
            parent, _, attr = key[len(_BUFFER):].rpartition(".")
            model.get_submodule(parent)._buffers[attr] = t
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"path: {path} does not hold {', '.join(left[:5])} of {arch}")
    model.qat_recipe = recipe
    return model


register_model_file(is_quantized_file, load_quantized)  # create_model(name, checkpoint_path=8-bit file)
