"""Training methods, one object each, driven by the one loop of vitfast/training/loop.py (see base.Method).
A self-supervised method is one file and one line below (registry.register_ssl_method)."""
from .base import Method
from .dino import DINO
from .mocov3 import MoCoV3
from .registry import SSL_METHODS, register_ssl_method
from .self_supervised import SSLOptions
from .supervised import Distillation, DistillOptions, Supervised
from .swav import SwAV

__all__ = ["Method", "Supervised", "Distillation", "DINO", "SwAV", "MoCoV3", "SSL_METHODS", "register_ssl_method",
           "create_method", "SSLOptions", "DistillOptions"]

register_ssl_method(DINO)
register_ssl_method(SwAV)
register_ssl_method(MoCoV3)


def create_method(cfg):
    """The method a resolved run config asks for."""
    if cfg.get("ssl"):
        return SSL_METHODS[cfg["ssl"]](cfg)
    if cfg["teacher"]:
        return Distillation(cfg)
    return Supervised(cfg)
