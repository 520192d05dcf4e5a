"""vitfast.data: datasets, transforms (torchvision.transforms.v2), Mixup/CutMix and loaders, timm-like.

    ds = create_dataset("builtin" | "cifar10:DIR" | "cifar100:DIR" | "folder:DIR" | "paths:DIR", split="train")
    ds.transform = create_transform(**resolve_data_config(model), train=True, auto_augment="rand-m9-mstd0.5-inc1")
    loader = create_loader(ds, batch_size=128, train=True, seed=0)   # loader.set_epoch(epoch) every epoch
    mixup = Mixup(0.8, 1.0, label_smoothing=0.1, num_classes=ds.num_classes)
    x, soft_y = mixup(x, y); loss = SoftTargetCrossEntropy()(model(x), soft_y)
"""
try:
    import torchvision  # noqa: F401
except ImportError as e:  # pragma: no cover - only without the optional dependency
    raise ImportError("vitfast.data needs torchvision (and Pillow): pip install 'vitfast[vision]'") from e

from .builtin import BUILTIN_CLASSES, BuiltinDataset, generate_builtin
from .device import DeviceImages, decode_transform
from .holdout import HeldOut, hold_out
from .datasets import IMG_EXTENSIONS, ArrayDataset, ImageFileDataset, UnreadableImagesError, create_dataset
from .loader import Loader, RepeatAugSampler, ShardSampler, ShuffleSampler, create_loader
from .mixup import Mixup, SoftTargetCrossEntropy, mixup_target, one_hot, smooth_one_hot
from .transforms import RandAugment, create_transform, parse_auto_augment, resolve_data_config

__all__ = ["ArrayDataset", "BUILTIN_CLASSES", "BuiltinDataset", "DeviceImages", "HeldOut", "IMG_EXTENSIONS", "ImageFileDataset", "Loader",
           "Mixup", "RandAugment", "RepeatAugSampler", "ShardSampler", "ShuffleSampler", "SoftTargetCrossEntropy", "UnreadableImagesError",
           "create_dataset", "create_loader", "create_transform", "decode_transform", "generate_builtin", "hold_out", "mixup_target", "one_hot",
           "parse_auto_augment", "resolve_data_config", "smooth_one_hot"]
