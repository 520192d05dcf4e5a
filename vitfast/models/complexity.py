"""Model size: parameters and multiply-accumulates (the unit the ViT papers call FLOPs)."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..layers.backend import use_backend

__all__ = ["count_params", "count_macs"]


def count_params(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model, img_size=224, in_chans=3, forward=None):
    """Multiply-accumulates of one forward pass on one image (matrix products, convolutions and
    attention; elementwise work is not counted, as in the papers), measured by tracing the model."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    p = next(model.parameters())
    x = torch.randn(1, in_chans, *size, device=p.device, dtype=p.dtype)
    was_training = model.training
    backends = {m: m.backend for m in model.modules() if hasattr(m, "backend")}
    model.eval()
    try:
        # The eager backend spells attention as two matrix products, which the counter sees on any
        # device (a fused SDPA call is opaque to it on CPU).
        for m in backends:
            m.backend = None
        with torch.no_grad(), use_backend("eager"), FlopCounterMode(display=False) as counter:
            (forward or model)(x)
    finally:
        model.train(was_training)
        for m, b in backends.items():
            m.backend = b
    return counter.get_total_flops() // 2
