"""Training methods, one object each, driven by the one loop of vitfast/training/loop.py (see base.Method)."""
from .base import Method
from .dino import DINO
from .supervised import Distillation, Supervised
from .swav import SwAV

__all__ = ["Method", "Supervised", "Distillation", "DINO", "SwAV", "SSL_METHODS", "create_method"]

SSL_METHODS = {"dino": DINO, "swav": SwAV}  # --ssl's choices


def create_method(cfg):
    """The method a resolved run config asks for."""
    if cfg.get("ssl"):
        return SSL_METHODS[cfg["ssl"]](cfg)
    if cfg["teacher"]:
        return Distillation(cfg)
    return Supervised(cfg)
