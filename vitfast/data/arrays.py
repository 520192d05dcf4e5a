"""A dataset of images held in memory (the built-in set, CIFAR's arrays): the base the datasets that
need no files share."""
import torch

__all__ = ["ArrayDataset"]


class ArrayDataset(torch.utils.data.Dataset):
    """Images held in memory as one uint8 (N, 3, H, W) tensor (the layout transforms.v2 takes)."""

    def __init__(self, images, targets, classes, transform=None, root=None, split=None):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images, self.targets = images, list(targets)
        self.classes, self.num_classes = list(classes), len(classes)
        self.transform, self.root, self.split = transform, root, split
        self.skipped, self.skipped_paths = 0, []  # nothing to skip in memory; the file datasets' interface

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = self.images[index]
        return (img if self.transform is None else self.transform(img)), self.targets[index]

    def __repr__(self):
        return (f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes})")
