"""Mixup / CutMix on a batch with soft, label-smoothed targets, and the matching loss (timm's semantics)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mixup", "SoftTargetCrossEntropy", "mixup_target", "one_hot", "smooth_one_hot"]


def one_hot(target, num_classes, on_value=1.0, off_value=0.0):
    """(N,) class indices -> (N, num_classes) float rows of off_value with on_value at the class."""
    out = torch.full((target.shape[0], num_classes), off_value, dtype=torch.float32, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), on_value)


def smooth_one_hot(target, num_classes, smoothing=0.0):
    """Label smoothing as timm does it: off = smoothing / num_classes, on = 1 - smoothing + off (rows sum to 1)."""
    off = smoothing / num_classes
    return one_hot(target, num_classes, 1.0 - smoothing + off, off)


def mixup_target(target, num_classes, lam=1.0, smoothing=0.0):
    """Soft targets of a batch mixed with its reverse (x[i] with x[N-1-i]) at weight lam."""
    y = smooth_one_hot(target, num_classes, smoothing)
    return y * lam + y.flip(0) * (1.0 - lam)


class Mixup:
    """Mixup (mixup_alpha) or CutMix (cutmix_alpha) of a batch with its reverse, timm's "batch" mode.

    mixup(x, y) -> (x mixed, soft targets (N, num_classes) summing to 1). With probability prob a batch
    is mixed at all; when both alphas are > 0, CutMix is chosen with probability switch_prob. The mixing
    weight lam ~ Beta(alpha, alpha); for CutMix the box is clipped to the image and lam is corrected to
    the area actually kept. Randomness comes from torch's global generator (torch.manual_seed)."""

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1, *,
                 num_classes):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1 and 0 <= label_smoothing < 1):
            raise ValueError("prob and switch_prob must be in [0, 1] and label_smoothing in [0, 1), got "
                             f"{prob}, {switch_prob}, {label_smoothing}")
        if num_classes is None or num_classes < 2:
            raise ValueError(f"Mixup needs num_classes >= 2, got {num_classes}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing, self.num_classes = float(label_smoothing), int(num_classes)

    def _params(self):
        """(lam, use_cutmix) for the next batch."""
        if torch.rand(()).item() >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = torch.rand(()).item() < self.switch_prob
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = torch.distributions.Beta(alpha, alpha).sample().item()
        return lam, cutmix

    @staticmethod
    def cutmix_box(height, width, lam):
        """(top, bottom, left, right) of a box of area ~(1 - lam) centred uniformly at random, clipped."""
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = torch.randint(0, height, ()).item(), torch.randint(0, width, ()).item()
        return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
                max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))

    def __call__(self, x, target):
        if x.shape[0] != target.shape[0]:
            raise ValueError(f"Mixup: {x.shape[0]} images but {target.shape[0]} targets")
        lam, cutmix = self._params()
        if lam < 1.0:
            if cutmix:
                top, bottom, left, right = self.cutmix_box(x.shape[-2], x.shape[-1], lam)
                x = x.clone()
                x[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
                lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing).to(x.device)


class SoftTargetCrossEntropy(nn.Module):
    """mean over the batch of -sum(target * log_softmax(logits)); integer targets fall back to plain
    cross entropy, so one criterion serves mixed training batches and evaluation."""

    def forward(self, logits, target):
        if not target.is_floating_point():
            return F.cross_entropy(logits, target)
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
