"""Training checkpoints: everything needed to continue exactly — weights, optimizer, scaler, EMA, the
state of every random generator, and the position in the data — written atomically."""
import random

import numpy as np
import torch

from ..models.checkpoint import atomic_write

__all__ = ["rng_state", "set_rng_state", "save_state", "load_state"]


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
