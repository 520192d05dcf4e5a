"""Linear evaluation of frozen features (DINO's eval_linear, VISSL's linear benchmark): a linear layer
(weights N(0, 0.01), bias 0) trained by SGD (momentum 0.9, no weight decay, lr on a cosine to 0) with
cross entropy on the training split's features, scored on the evaluated split. The features are the
backbone's pooled ones computed once, without augmentation (DINO crops and flips each epoch and, for
ViT-S, concatenates the last four blocks' class tokens): a faster, slightly lower-reading protocol.

DINO fixes the learning rate for ImageNet's 1.28M images; on a small split the same epochs are few steps
and a fixed rate can leave the layer near its initialisation. Given several rates, the probe sweeps them
as DINOv2 does (one classifier per rate on the same batches), but picks the rate on features it did not
train on (a seeded tenth of the training split), never on the evaluated split."""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["Probe", "linear_probe", "SWEEP_LRS"]

# DINOv2's grid of rates (eval/linear.py's learning_rates)
SWEEP_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


class Probe(NamedTuple):
    logits: torch.Tensor  # of the evaluated features, (N, num_classes)
    loss: float  # the kept classifier's last training batch
    lr: float  # the kept classifier's rate


def linear_probe(train_feats, train_labels, test_feats, num_classes, epochs=100, lr=1e-3, batch_size=256, seed=0):
    """Probe of a linear classifier trained on train_feats. lr: one rate (DINO's protocol: every training
    feature trains it) or a sequence of rates (a classifier each on nine tenths, the best on the last tenth
    kept)."""
    lrs = [float(lr)] if isinstance(lr, (int, float)) else [float(r) for r in lr]
    g = torch.Generator().manual_seed(seed)
    fit, held = torch.arange(train_feats.shape[0]), None
    if len(lrs) > 1:
        order = torch.randperm(len(fit), generator=g)
        held, fit = order[:max(1, len(fit) // 10)], order[max(1, len(fit) // 10):]
    heads = [torch.nn.Linear(train_feats.shape[1], num_classes) for _ in lrs]
    with torch.no_grad():
        for head in heads:
            head.weight.normal_(0, 0.01, generator=g)
            head.bias.zero_()
    opt = torch.optim.SGD([{"params": h.parameters(), "lr": r} for h, r in zip(heads, lrs)], momentum=0.9,
                          weight_decay=0.0)
    n = len(fit)
    steps, step, each = epochs * math.ceil(n / batch_size), 0, [torch.tensor(float("nan"))] * len(lrs)
    for _ in range(epochs):
        order = fit[torch.randperm(n, generator=g)]
        for start in range(0, n, batch_size):
            for group, r in zip(opt.param_groups, lrs):
                group["lr"] = r * 0.5 * (1 + math.cos(math.pi * step / steps))
            x, y = train_feats[order[start:start + batch_size]], train_labels[order[start:start + batch_size]]
            each = [F.cross_entropy(h(x), y) for h in heads]  # independent classifiers: one backward of the sum
            opt.zero_grad(set_to_none=True)
            sum(each).backward()
            opt.step()
            step += 1
    with torch.no_grad():
        best = 0 if held is None else max(range(len(heads)), key=lambda i: (
            (heads[i](train_feats[held]).argmax(1) == train_labels[held]).float().mean().item(), -i))
        return Probe(heads[best](test_feats), each[best].item(), lrs[best])
