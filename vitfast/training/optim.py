"""Optimizers and the per-step learning-rate schedule."""
import math

import torch

__all__ = ["param_groups", "create_optimizer", "Optimization", "AMP_DTYPES", "Lamb", "lr_at"]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --amp: autocast's dtype


def param_groups(model, weight_decay):
    """Two groups: decayed weights, and everything weight decay should not touch — biases, norm
    parameters (1-D), and the tokens and position embeddings a model lists in no_weight_decay()."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.split(".")[-1]
        (no_decay if p.ndim <= 1 or name in skip or leaf in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019): Adam's update rescaled per tensor by ||w|| / ||update|| (the trust ratio),
    with decoupled weight decay inside the update, as in the large-batch BERT/ViT recipes."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = m / (1 - b1 ** state["step"])
                v_hat = v / (1 - b2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def create_optimizer(model, name, lr, weight_decay, momentum=0.9, betas=(0.9, 0.999)):
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas)
    raise ValueError(f"opt must be one of adamw, sgd, lamb, got {name!r}")


class Optimization:
    """What the loop's step applies: the optimizer, the loss scaler (on under --amp fp16) and autocast's
    dtype (None: --amp none)."""

    def __init__(self, cfg, trained, device, lr):
        self.optimizer = create_optimizer(trained, cfg["opt"], lr, cfg["weight_decay"], cfg["momentum"], cfg["betas"])
        self.amp_dtype = AMP_DTYPES[cfg["amp"]]
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg["amp"] == "fp16")


def warmup_length(warmup_epochs, warmup_steps, steps_per_epoch):
    """Optimizer steps of warmup: warmup_steps as given, else warmup_epochs x steps_per_epoch rounded to the
    nearest step (at least one when any warmup was asked for)."""
    if warmup_steps is not None:
        return warmup_steps
    if not warmup_epochs:
        return 0
    return max(1, round(warmup_epochs * steps_per_epoch))


def lr_at(step, total, warmup, lr, warmup_lr, min_lr, sched="cosine", milestones=(0.5, 0.75), decay_rate=0.1):
    """Learning rate for optimizer step `step` of `total`: linear warmup from warmup_lr over `warmup`
    steps, then cosine / linear decay to min_lr, step decay at fractions of training, or constant."""
    if step < warmup:
        return warmup_lr + (lr - warmup_lr) * step / warmup
    if sched == "constant":
        return lr
    if sched == "step":
        return lr * decay_rate ** sum(step >= m * total for m in milestones)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if sched == "linear":
        return min_lr + (lr - min_lr) * (1 - progress)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
