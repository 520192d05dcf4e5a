"""A validation split held out of the training split, for datasets that ship only training images
(the CIFAR-10 JPEG folder, most in-house data): the last images of each class, in the dataset's
order, so the split is the same on every machine and never depends on a seed."""
import torch

__all__ = ["HeldOut", "hold_out"]


class HeldOut(torch.utils.data.Subset):
    """A Subset that keeps the dataset interface vitfast's loops read (classes, targets, transform)."""

    def __init__(self, dataset, indices, split):
        super().__init__(dataset, list(indices))
        self.classes, self.num_classes, self.split = dataset.classes, dataset.num_classes, split
        self.targets = [dataset.targets[i] for i in self.indices]
        self.root = getattr(dataset, "root", None)

    @property
    def transform(self):
        return self.dataset.transform

    @property
    def skipped(self):
        return getattr(self.dataset, "skipped", 0)

    def __repr__(self):
        return f"HeldOut({self.dataset!r}, split={self.split!r}, n={len(self)})"


def hold_out(train_view, val_view, n):
    """Split one set of training images into (train, val): val takes the last n // K images of each of
    the K classes (the first n % K classes one more), train keeps the rest. train_view and val_view are
    the same images under the training and the evaluation transform (two datasets of one spec)."""
    if len(train_view) != len(val_view) or train_view.targets != val_view.targets:
        raise ValueError("hold_out: the two views must hold the same images in the same order")
    k = train_view.num_classes
    if not 0 < n < len(train_view):
        raise ValueError(f"holdout must be in [1, {len(train_view) - 1}] for a training split of "
                         f"{len(train_view)} images, got {n}")
    per_class = {c: [] for c in range(k)}
    for i, c in enumerate(train_view.targets):
        per_class[c].append(i)
    held = []
    for c in range(k):
        want = n // k + (c < n % k)
        if want and want >= len(per_class[c]):
            raise ValueError(f"holdout {n}: class {train_view.classes[c]!r} has {len(per_class[c])} training "
                             f"images, too few to give {want} to validation and keep any for training")
        held += per_class[c][len(per_class[c]) - want:]
    chosen = set(held)
    kept = [i for i in range(len(train_view)) if i not in chosen]
    return HeldOut(train_view, kept, "train"), HeldOut(val_view, sorted(held), "val")
