"""Whether an op's call records a backward: the ops store what only a backward reads (linear_gelu's
pre-activation, layer_norm's statistics) just then, and the model backend picks kernels measured with
or without one."""
import torch


def needs_grad(*tensors):
    """Grad mode is on and one of the tensors (None skipped) requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
