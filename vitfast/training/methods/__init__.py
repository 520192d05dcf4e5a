"""Training methods, one object each, driven by the one loop of vitfast/train.py (see base.Method)."""
from .base import Method
from .dino import DINO
from .supervised import Distillation, Supervised
from .swav import SwAV

__all__ = ["Method", "Supervised", "Distillation", "DINO", "SwAV", "create_method"]


def create_method(cfg):
    """The method a resolved run config asks for."""
    if cfg.get("ssl"):
        return {"dino": DINO, "swav": SwAV}[cfg["ssl"]](cfg)
    if cfg["teacher"]:
        return Distillation(cfg)
    return Supervised(cfg)
