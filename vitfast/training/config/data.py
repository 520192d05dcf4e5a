"""The data's options (the dataset, its loading and normalisation) and the supervised augmentation's."""
from dataclasses import dataclass

from ...cli import UsageError, blame, nearest
from .component import Component, option
from .flags import show
from .kinds import FRACTION, NON_NEGATIVE, OPEN_UNIT, POSITIVE, PROBABILITY, AT_LEAST_1

DATA_KINDS = ("builtin", "cifar10", "cifar100", "folder", "paths")

# The built-in data's own defaults for a self-supervised run (benchmarks/results/ssl_ablation_cpu.md): its
# colours are drawn at random, so every crop is grayscale; its classes differ in texture scale, which a
# crop of under 80% of the image changes, so two crops of 80-100% (where the run names none of its own).
BUILTIN_SSL = dict(crop_grayscale=1.0)
BUILTIN_SSL_CROPS = dict(num_crops=[2], crop_scales=[[0.8, 1.0]])


def _is(*kinds):
    return lambda c: str(c["data"]).lower().startswith(tuple(f"{k}:" for k in kinds))


@dataclass
class DataOptions(Component):
    group = "data"

    data: str = option("builtin", "builtin | cifar10:DIR | cifar100:DIR | folder:DIR | paths:DIR")
    download: bool = option(False, "allow downloading CIFAR (never otherwise)",
                            needs=("a CIFAR dataset (--data cifar10:DIR or cifar100:DIR)", _is("cifar10", "cifar100")))
    strict_data: bool = option(False, "fail on an unreadable image instead of skipping it",
                               needs=("an image-file dataset (--data folder:DIR or paths:DIR)", _is("folder", "paths")))
    workers: int = option(0, "data loading processes per rank", NON_NEGATIVE)
    holdout: int | None = option(None, "validate on the last N training images (N / classes of each class) "
                                       "instead of the dataset's own validation split", AT_LEAST_1)
    data_on_device: bool = option(False, "decode the training images once, keep them on the device and "
                                         "crop/flip/RandAugment/erase them there in batches (small datasets; no "
                                         "--color-jitter); with --ssl, the multi-crop augmentation in batches")
    crop_pct: float | None = option(None, "eval resize = img_size / crop_pct (default: the model's)", OPEN_UNIT)
    mean: list[float] | None = option(None, "normalisation mean, R,G,B (default: the model's)")
    std: list[float] | None = option(None, "normalisation std, R,G,B (default: the model's)", POSITIVE)

    def check(self, config, where):
        for key in ("mean", "std"):
            if getattr(self, key) is not None and len(getattr(self, key)) != 3:
                raise UsageError(f"{where(key)} must be three numbers (one per RGB channel), got "
                                 f"{show(getattr(self, key))}")
        # the spec's syntax here; whether the dataset is there is checked when it is opened
        kind, _, root = str(self.data).partition(":")
        if kind.lower() not in DATA_KINDS:
            raise UsageError(f"{where('data')} must be builtin, cifar10:DIR, cifar100:DIR, folder:DIR or paths:DIR, "
                             f"got {self.data!r}{nearest(kind, DATA_KINDS)}")
        if kind.lower() != "builtin" and not root.strip():
            raise UsageError(f"{where('data')} {self.data!r}: {kind} needs a directory, as in {kind}:DIR")


@dataclass
class AugmentOptions(Component):
    group = "augment"
    SUPERVISED_ONLY = ("scale", "smoothing", "hflip")  # a --ssl run crops with --crop-scales, has no labels

    scale: list[float] = option([0.08, 1.0], "RandomResizedCrop scale range lo,hi", OPEN_UNIT)
    hflip: float = option(0.5, "horizontal flip probability", PROBABILITY)
    aa: str | None = option(None, "RandAugment, e.g. rand-m9-mstd0.5-inc1 (default: off)")
    color_jitter: float = option(0.0, "colour jitter strength", NON_NEGATIVE)
    reprob: float = option(0.0, "random erasing probability", PROBABILITY)
    mixup: float = option(0.0, "mixup alpha (0: off)", NON_NEGATIVE)
    cutmix: float = option(0.0, "cutmix alpha (0: off)", NON_NEGATIVE)
    smoothing: float = option(0.1, "label smoothing", FRACTION)
    repeated_aug: int = option(0, "repeated augmentation count (DeiT: 3)", NON_NEGATIVE)

    def check(self, config, where):
        if len(self.scale) != 2 or self.scale[0] > self.scale[1]:
            raise UsageError(f"{where('scale')} must be two numbers lo,hi with 0 < lo <= hi <= 1, got "
                             f"{show(self.scale)}")
        if config["data_on_device"] and self.color_jitter:
            raise UsageError(f"{where('data_on_device')} has no colour jitter; {where('color_jitter')} needs the host "
                             "pipeline: drop one or the other (RandAugment, --aa rand-..., runs on the device)")
        if self.aa:
            from ...data import parse_auto_augment

            with blame(where("aa")):
                parse_auto_augment(self.aa)
                if config["data_on_device"]:
                    from ...data.device_randaug import DeviceRandAugment

                    DeviceRandAugment.from_spec(self.aa)
