"""Training checkpoints: everything needed to continue exactly — weights, optimizer, scaler, EMA, the
state of every random generator, and the position in the data — written atomically."""
import json
import os
import random

import numpy as np
import torch

from ..cli import UsageError, one_line
from ..models.checkpoint import atomic_write, from_file_metadata

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state", "read_training_checkpoint", "model_from_file"]


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, state):
    """torch.save(state) to path atomically (temp file, fsync, rename)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path):
    # weights_only=False: the file holds numpy and Python RNG states; only load checkpoints you trust.
    return torch.load(path, map_location="cpu", weights_only=False)


def read_training_checkpoint(path, argument):
    """load_state(path), or a UsageError naming `argument` when there is no file or it is not a vitfast
    training checkpoint (another checkpoint, a truncated or foreign file)."""
    if not os.path.isfile(path):
        raise UsageError(f"{argument}: no file at {path!r}")
    try:
        state = load_state(path)
    except Exception as e:  # torch.load of a foreign or truncated file: UnpicklingError, RuntimeError, EOFError...
        raise UsageError(f"{argument}: {path!r} is not a vitfast training checkpoint (torch.load: {one_line(e)})") from e
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise UsageError(f"{argument}: {path!r} is not a vitfast training checkpoint (it holds no model and config)")
    return state


def model_from_file(path, argument, weights="model"):
    """(model, info) rebuilt from a file that says how: a vitfast training checkpoint (its config) or a
    .safetensors file written by save_checkpoint (its metadata). info: architecture, model_kwargs (with
    num_classes and img_size) and the training config ({} when the file records none: a .safetensors
    file saved without one). weights: "model" or "ema" (a training checkpoint's only)."""
    import vitfast

    if str(path).endswith(".safetensors"):
        if not os.path.isfile(path):
            raise UsageError(f"{argument}: no file at {path!r}")
        if weights == "ema":
            raise UsageError(f"{argument}: {path!r} holds one set of weights, no EMA weights (--ema needs the "
                             "run's checkpoint-*.pt)")
        from safetensors import safe_open

        from ..quant.saved import is_quantized_metadata

        try:  # one open: the metadata first, and no tensor read from an 8-bit file that is refused below
            with safe_open(path, "pt") as f:
                meta = from_file_metadata(f.metadata())
                quantized = is_quantized_metadata(meta)
                state_dict = {} if quantized else {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own SafetensorError on a foreign or truncated file
            raise UsageError(f"{argument}: {path!r} is not a readable .safetensors file ({one_line(e)})") from e
        if quantized:
            raise UsageError(f"{argument}: {path!r} is an 8-bit {meta.get('recipe')} model (vitfast.quant."
                             "save_quantized): evaluate its fp32 checkpoint with --quant "
                             f"{str(meta.get('recipe')).lower()}, or load it with vitfast.quant.load_quantized")
        if "architecture" not in meta:
            raise UsageError(f"{argument}: {path!r} does not say which model it holds (no vitfast metadata); "
                             "give the model by name (--model NAME with the weights file)")
        name, kwargs = meta["architecture"], json.loads(meta["model_kwargs"])
        config = json.loads(meta.get("config", "{}"))  # the run's, when the writer stored it (save_checkpoint)
    else:
        state = read_training_checkpoint(path, argument)
        config = state["config"]
        if weights == "ema":
            if state.get("ema") is None:
                raise UsageError(f"{argument}: {path!r} holds no EMA weights (its run had --ema 0)")
            state_dict = state["ema"]
        else:
            state_dict = state["model"]
        name, kwargs = config["model"], dict(config["model_kwargs"])
        if config.get("img_size"):
            kwargs["img_size"] = config["img_size"]
        if config.get("drop_path") is not None:
            kwargs["drop_path_rate"] = config["drop_path"]
        heads = [v for k, v in state_dict.items() if k.split(".")[-2:] == ["head", "weight"]]
        if heads:
            kwargs["num_classes"] = heads[0].shape[0]
    try:
        model = vitfast.create_model(name, **kwargs)
        model.load_state_dict(state_dict)
    except (ValueError, TypeError, RuntimeError) as e:
        raise UsageError(f"{argument}: {path!r} does not rebuild as {name} ({one_line(e)})") from e
    return model, {"architecture": name, "model_kwargs": kwargs, "config": config}
