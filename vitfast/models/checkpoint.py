"""Loading and saving weights: timm / official .pth, Google .npz, safetensors, written atomically
(vitfast.files); errors that list every missing key, unexpected key and shape mismatch (state_dict.py)."""
import argparse
import json
import os

import torch

from ..cli import first_line
from ..files import atomic_write, from_file_metadata, is_quantized_file, model_recipe, to_file_metadata
from .state_dict import CheckpointMismatchError, LoadResult, load_state_dict

__all__ = ["CheckpointMismatchError", "LoadResult", "load_state_dict", "load_checkpoint", "save_checkpoint",
           "read_state_dict", "load_for_finetune", "is_head_key", "RUN_WEIGHTS", "run_weights", "stored_weights",
           "ssl_backbone"]

# Which weights of a vitfast run's file to take: "reported" are the ones the run validated, chose
# checkpoint-best by and saved as model.safetensors (the EMA's where it kept one); "ema" / "raw" ask.
RUN_WEIGHTS = ("reported", "ema", "raw")
_REPORTED = {"ema": "EMA weights (the ones the run validated and reported)",
             "raw": "trained weights (the ones the run validated and reported; it kept no EMA)"}


def _ssl_backbone(config, held):
    """What a self-supervised run reports (held: "ema", a teacher; "raw", the trained backbone), or None
    for another run."""
    method = (config or {}).get("ssl")
    which = "teacher backbone" if held == "ema" else "backbone"
    return f"the {which} of a --ssl {method} run (the one it validated and reported; no head)" if method else None


def run_weights(state, weights, source):
    """(state dict, description) of a vitfast training checkpoint's {"model", "ema", ...}; ValueError
    naming `source` when the weights asked for are not there."""
    if weights not in RUN_WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(RUN_WEIGHTS)}, got {weights!r}")
    has_ema = state.get("ema") is not None
    if weights == "ema" and not has_ema:
        raise ValueError(f"{source} holds no EMA weights (its run had --ema 0)")
    if weights == "raw":
        return state["model"], "raw trained weights (as asked" + ("; the run reported its EMA's)" if has_ema else ")")
    if has_ema:
        return state["ema"], "EMA weights (as asked)" if weights == "ema" else \
            _ssl_backbone(state.get("config"), "ema") or _REPORTED["ema"]
    return state["model"], _ssl_backbone(state.get("config"), "raw") or _REPORTED["raw"]


def stored_weights(meta, weights, source):
    """The description of a .safetensors file's one set of weights (meta: from_file_metadata's), checked
    against `weights`: a run's model.safetensors holds what the run reported; ValueError when another set
    is asked for."""
    if weights not in RUN_WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(RUN_WEIGHTS)}, got {weights!r}")
    held = meta.get("weights")
    if held is None and "config" in meta:  # written by an earlier release: its run saved the EMA's if it kept one
        held = "ema" if (json.loads(meta["config"]).get("ema") or 0) > 0 else "raw"
    if weights != "reported" and weights != held:
        has = {"ema": "the run's EMA weights", "raw": "the run's trained weights (it kept no EMA)"}.get(
            held, "one set of weights, not a run's EMA")
        raise ValueError(f"{source} holds only {has}: the run's checkpoint-*.pt holds both")
    if held is None:
        return None
    return _ssl_backbone(json.loads(meta.get("config", "{}")), held) or _REPORTED[held]


def _weights_only_extras():
    """What torch.load's weights-only unpickler may rebuild besides tensors, and nothing else: timm's
    checkpoint saver (T2T-ViT, DVT) stores its argparse.Namespace beside the weights, and a vitfast
    training checkpoint numpy's random state (these rebuild arrays, no other objects)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return [argparse.Namespace, _reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_state_dict(path, weights="reported"):
    """A flat {name: tensor} from a .pth/.pt/.bin (torch.save: plain weights, or a training checkpoint's
    model, vitfast's checkpoint-*.pt included) or .safetensors file; .npz files go through
    vitfast.models.load_npz instead. weights: which of a vitfast run's file (RUN_WEIGHTS)."""
    return read_weights(path, weights)[0]


STATE_FILE = "state.pt"  # in a sharded checkpoint's folder (an --fsdp run's): all of it but the shards


def sharded_weights(path, key="model"):
    """A whole state dict in a sharded checkpoint folder (torch.distributed.checkpoint): the model's, or
    another entry's ("ema"), read by this process alone with no model to load it into (as torch's
    dcp_to_torch_save reads a folder)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state = {}
    _load_state_dict(state, storage_reader=FileSystemReader(os.fspath(path)),
                     planner=_EmptyStateDictLoadPlanner(keys={key}), no_dist=True)
    return state[key]


def with_sharded_weights(state, path):
    """A sharded checkpoint's state.pt contents with its model's weights, and its EMA's where the shards
    hold one, read whole from the folder at path (what run_weights takes)."""
    ema = sharded_weights(path, "ema") if "ema" in state.get("sharded_keys", ()) else state.get("ema")
    return dict(state, model=sharded_weights(path), ema=ema)


def read_weights(path, weights="reported"):
    """(read_state_dict's, run_weights' or stored_weights' description: None for a file not of a vitfast run)."""
    path = os.fspath(path)
    sharded = os.path.isfile(os.path.join(path, STATE_FILE))  # a folder: an --fsdp run's checkpoint
    if not os.path.isfile(path) and not sharded:
        raise FileNotFoundError(f"checkpoint_path {path!r} does not exist")
    try:
        if sharded:
            with torch.serialization.safe_globals(_weights_only_extras()):
                meta, obj = None, torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
            obj = with_sharded_weights(obj, path)
        elif path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                meta, obj = from_file_metadata(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        else:
            meta = None
            with torch.serialization.safe_globals(_weights_only_extras()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign, truncated or unsafe file: UnpicklingError, RuntimeError, SafetensorError...
        raise ValueError(f"{path!r} cannot be read as weights ({type(e).__name__}: {first_line(e)})") from e
    if meta is not None:
        return obj, stored_weights(meta, weights, f"{path!r}")
    if isinstance(obj, dict) and {"model", "ema", "config"} <= set(obj):  # a vitfast training checkpoint
        return run_weights(obj, weights, f"{path!r}")
    if weights != "reported":
        raise ValueError(f"{path!r} is not a vitfast run's file: it holds one set of weights, not {weights!r}")
    foreign = ssl_backbone(obj)
    if foreign is not None:
        return foreign
    for key in ("model", "state_dict", "model_state_dict", "model_state", "model_ema"):  # training checkpoints
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict")
    return obj, None


# VISSL's ViT trunk names two tensors its own way (vissl/models/trunks/vision_transformer.py)
_VISSL_NAMES = {"class_token": "cls_token", "pos_embedding": "pos_embed"}


def ssl_backbone(obj):
    """(backbone state dict, description) of another library's self-supervised training checkpoint, as
    its own evaluation takes it, or None for any other file:
    - DINO's (facebookresearch/dino; iBOT's and DINOv2's alike): {"student", "teacher", ...} -> the
      teacher's backbone ("module." and "backbone." prefixes dropped), as its eval scripts'
      --checkpoint_key teacher; the projection heads dropped;
    - VISSL's: {"classy_state_dict": {"base_model": {"model": {"trunk", "heads"}}}} -> the trunk, its
      class_token / pos_embedding named as timm's; the heads dropped."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("teacher"), dict) and isinstance(obj.get("student"), dict):
        state = {k.removeprefix("module."): v for k, v in obj["teacher"].items()}
        if any(k.startswith("backbone.") for k in state):
            state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        return state, "the teacher backbone of a DINO training checkpoint (its heads dropped)"
    try:
        trunk = obj["classy_state_dict"]["base_model"]["model"]["trunk"]
    except (KeyError, TypeError):
        return None
    trunk = {k.removeprefix("module.").removeprefix("_feature_blocks."): v for k, v in trunk.items()}
    return {_VISSL_NAMES.get(k, k): v for k, v in trunk.items()}, "the trunk of a VISSL checkpoint (its heads dropped)"


def load_checkpoint(model, path, strict=True, weights="reported"):
    """Load a checkpoint in any layout vitfast knows: the model's checkpoint_filter_fn converts foreign
    layouts (timm, official DeiT / T2T-ViT / DVT, resized position embeddings); .npz goes to load_npz.
    weights: which of a vitfast run's file (RUN_WEIGHTS); the result's .weights describes them."""
    if os.fspath(path).endswith(".npz"):
        from .npz import load_npz

        return load_npz(model, path, strict=strict)
    if is_quantized_file(path):
        raise ValueError(f"checkpoint {os.fspath(path)!r} is an 8-bit model (vitfast.quant.save_quantized): it "
                         "loads as one, with vitfast.quant.load_quantized(path) or create_model(name, "
                         "checkpoint_path=path), not into an fp32 model")
    state_dict, which = read_weights(path, weights)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    result = load_state_dict(model, state_dict, strict=strict, source=f"checkpoint {os.fspath(path)!r}")
    return result._replace(weights=which)


def is_head_key(key):
    """A classifier head's tensor (head, head_dist, and DVT's per-exit heads): what a fine-tune replaces."""
    return key.split(".")[-2:-1] in (["head"], ["head_dist"])


def load_for_finetune(model, path, weights="reported"):
    """Start a fine-tune from `path`: every tensor must fit the model except the classifier heads, which
    stay freshly initialised when the class count differs. Returns the LoadResult (its entries are head
    tensors only); raises CheckpointMismatchError listing every other tensor that does not fit (the
    model is then partly loaded: discard it). weights: as load_checkpoint's."""
    if os.fspath(path).endswith(".npz"):  # load_npz itself leaves a head of another class count fresh
        return load_checkpoint(model, path, strict=True)
    result = load_checkpoint(model, path, strict=False, weights=weights)
    foreign = LoadResult([k for k in result.missing_keys if not is_head_key(k)],
                         [k for k in result.unexpected_keys if not is_head_key(k)],
                         [m for m in result.mismatched_keys if not is_head_key(m[0])])
    if any(foreign):
        raise CheckpointMismatchError(foreign, f"checkpoint {os.fspath(path)!r}")
    return result


def save_checkpoint(model, path, config=None, weights=None):
    """Save the model's weights, atomically: .safetensors by extension (with model_recipe() in its
    metadata), else torch.save of the plain state dict (what timm writes and reads). config: the
    training run's config (a JSON-able dict), stored in the .safetensors metadata so the file alone says
    what the model was trained on (data, normalisation, crop; read back by training.state.model_from_file).
    weights: "ema" or "raw", which of the run's these are (stored with config; see stored_weights)."""
    state_dict = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if os.fspath(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        fields = dict(model_recipe(model) or {})
        if config is not None:
            try:
                fields["config"] = json.dumps(config)
            except TypeError as e:
                raise ValueError(f"config: cannot be stored as JSON ({e})") from e
        if weights is not None:
            fields["weights"] = weights
        meta = to_file_metadata(fields) if fields else None
        atomic_write(path, lambda tmp: save_file(state_dict, tmp, metadata=meta))
    elif config is not None or weights is not None:  # a plain state dict has no place: dropping would be silent
        raise ValueError(f"config, weights: only a .safetensors file stores them, not {os.fspath(path)!r}")
    else:
        atomic_write(path, lambda tmp: torch.save(state_dict, tmp))
