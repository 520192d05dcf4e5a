"""Training checkpoints: everything needed to continue exactly — weights, optimizer, scaler, EMA, the
state of every random generator, and the position in the data — written atomically."""
import json
import os
import random

import numpy as np
import torch

from ..cli import UsageError, blame, one_line
from ..files import atomic_write, from_file_metadata, is_quantized_metadata
from ..models.checkpoint import STATE_FILE, run_weights, stored_weights, with_sharded_weights
from .config.model import creation_kwargs
from .sharded_checkpoint import settled

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state", "settled", "read_training_checkpoint",
           "model_from_file"]


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
    """A training checkpoint: the .pt file, or a sharded checkpoint folder's unsharded part (the model and
    optimizer stay in its shards; `sharded` names the folder to load them from)."""
    path = settled(path)
    # weights_only=False: the file holds numpy and Python RNG states; only load checkpoints you trust.
    if os.path.isdir(path):
        return dict(torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=False), sharded=path)
    return torch.load(path, map_location="cpu", weights_only=False)


def read_training_checkpoint(path, argument):
    """load_state(path), or a UsageError naming `argument` when there is no file or it is not a vitfast
    training checkpoint (another checkpoint, a truncated or foreign file)."""
    if not os.path.exists(settled(path)):
        raise UsageError(f"{argument}: no file at {path!r}")
    try:
        state = load_state(path)
    except Exception as e:  # torch.load of a foreign or truncated file: UnpicklingError, RuntimeError, EOFError...
        raise UsageError(f"{argument}: {path!r} is not a vitfast training checkpoint (torch.load: {one_line(e)})") from e
    if not isinstance(state, dict) or "config" not in state or not ({"model", "sharded"} & set(state)):
        raise UsageError(f"{argument}: {path!r} is not a vitfast training checkpoint (it holds no model and config)")
    return state


# how each command line loads weights that do not say their model
_BY_NAME = {"--checkpoint": "--model NAME --checkpoint-path FILE",
            "--teacher": "--teacher NAME --teacher-checkpoint FILE"}


def run_file(path, argument):
    """What to read for `path`: the path itself, or where a run's folder is given, the run's model
    (model.safetensors, written when it finished), else its checkpoint-last (a run not finished)."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, STATE_FILE)):  # a file, or a sharded checkpoint
        return path
    from .rundir import last_checkpoint

    model = os.path.join(path, "model.safetensors")
    found = model if os.path.isfile(model) else last_checkpoint(path)
    if found is None:
        raise UsageError(f"{argument}: {path} is a folder with no vitfast run in it (a run's folder holds "
                         "model.safetensors or checkpoint-last.pt)")
    return found


def model_from_file(path, argument, weights="reported"):
    """(model, info) rebuilt from a file that says how: a vitfast training checkpoint (its config) or a
    .safetensors file written by save_checkpoint (its metadata); a run's folder reads its model (run_file).
    info: architecture, model_kwargs (with num_classes and img_size), the training config ({} when the file
    records none: a .safetensors file saved without one), weights, which of the run's these are (None: not
    said), and path, the file read. weights: which to take of a run's file, vitfast.models.checkpoint.RUN_WEIGHTS."""
    import vitfast

    path = run_file(path, argument)
    if str(path).endswith(".safetensors"):
        if not os.path.isfile(path):
            raise UsageError(f"{argument}: no file at {path!r}")
        from safetensors import safe_open

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
            by_name = _BY_NAME.get(argument, "create_model(NAME, checkpoint_path=FILE)")
            raise UsageError(f"{argument}: {path!r} does not say which model it holds (no vitfast metadata); weights "
                             f"of a model by name load with {by_name}")
        with blame(argument, ValueError):
            which = stored_weights(meta, weights, repr(path))
        name, kwargs = meta["architecture"], json.loads(meta["model_kwargs"])
        config = json.loads(meta.get("config", "{}"))  # the run's, when the writer stored it (save_checkpoint)
    else:
        try:
            state = read_training_checkpoint(path, argument)
        except UsageError as e:  # weights without a run's record: they load by name
            if os.path.isfile(path) and argument in _BY_NAME:
                raise UsageError(f"{e}; weights of a model by name load with {_BY_NAME[argument]}") from e
            raise
        config = state["config"]
        if state.get("sharded"):  # an --fsdp run's checkpoint folder: its shards read whole, here
            state = with_sharded_weights(state, state["sharded"])
        with blame(argument, ValueError):
            state_dict, which = run_weights(state, weights, repr(path))
        name, kwargs = config["model"], creation_kwargs(config)
        heads = [v for k, v in state_dict.items() if k.split(".")[-2:] == ["head", "weight"]]
        if heads:
            kwargs["num_classes"] = heads[0].shape[0]
        elif config.get("ssl"):  # a self-supervised run's backbone: no classifier
            kwargs["num_classes"] = 0
    try:
        model = vitfast.create_model(name, **kwargs)
        model.load_state_dict(state_dict)
    except (ValueError, TypeError, RuntimeError) as e:
        raise UsageError(f"{argument}: {path!r} does not rebuild as {name} ({one_line(e)})") from e
    return model, {"architecture": name, "model_kwargs": kwargs, "config": config, "weights": which, "path": path}
