"""Linear evaluation of frozen features (DINO's eval_linear, VISSL's linear benchmark): a linear layer
(weights N(0, 0.01), bias 0) trained by SGD (momentum 0.9, no weight decay, lr on a cosine to 0) with
cross entropy on the training split's features, scored on the evaluated split. The features are the
backbone's pooled ones computed once, without augmentation (DINO crops and flips each epoch and, for
ViT-S, concatenates the last four blocks' class tokens): a faster, slightly lower-reading protocol."""
import math

import torch
import torch.nn.functional as F

__all__ = ["linear_probe"]


def linear_probe(train_feats, train_labels, test_feats, num_classes, epochs=100, lr=1e-3, batch_size=256, seed=0):
    """(test logits (N, num_classes), final training loss) of a linear classifier trained on train_feats."""
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(train_feats.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    n = train_feats.shape[0]
    steps, step, loss = epochs * math.ceil(n / batch_size), 0, torch.tensor(float("nan"))
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(layer(train_feats[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        return layer(test_feats), loss.item()
