"""Image transforms (torchvision.transforms.v2), built like timm's create_transform.

Every transform takes a PIL image or a uint8 CHW tensor and returns a normalised float32 CHW tensor."""
import math
import re

import torch
from torchvision.transforms import InterpolationMode, v2

from ..models.registry import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["RandAugment", "create_transform", "parse_auto_augment", "resolve_data_config"]

_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                  "nearest": InterpolationMode.NEAREST, "nearest-exact": InterpolationMode.NEAREST_EXACT}
_MAX_LEVEL = 10.0  # timm's magnitude scale: m10 is each operation's strongest setting


def check_randaugment(num_ops, magnitude, magnitude_std):
    """RandAugment's settings on timm's scale (here and on the device): a ValueError names the bad one."""
    if not 0 <= magnitude <= _MAX_LEVEL:
        raise ValueError(f"RandAugment magnitude must be within [0, {_MAX_LEVEL:g}], got {magnitude}")
    if num_ops < 1:
        raise ValueError(f"RandAugment num_ops must be at least 1, got {num_ops}")
    if magnitude_std < 0:
        raise ValueError(f"RandAugment magnitude_std must be >= 0, got {magnitude_std}")


class RandAugment(v2.RandAugment):
    """torchvision's RandAugment on timm's magnitude scale (0..10, fractions allowed), with timm's
    magnitude noise: each call draws its magnitude from N(magnitude, magnitude_std) clipped to [0, 10]
    (uniform on [0, magnitude] when magnitude_std is inf).

    torchvision's operations already follow timm's "increasing" variant (inc1): a larger magnitude is
    always a stronger distortion (solarize threshold and posterize bits fall as it grows)."""

    _STEPS = 100  # magnitude bins per unit: 0.01 resolution on the 0..10 scale

    def __init__(self, num_ops=2, magnitude=9.0, magnitude_std=0.0, **kwargs):
        check_randaugment(num_ops, magnitude, magnitude_std)
        super().__init__(num_ops=int(num_ops), magnitude=self._bin(magnitude),
                         num_magnitude_bins=int(_MAX_LEVEL * self._STEPS) + 1, **kwargs)
        self.level, self.magnitude_std = float(magnitude), float(magnitude_std)

    @classmethod
    def _bin(cls, level):
        return int(round(min(max(level, 0.0), _MAX_LEVEL) * cls._STEPS))

    def forward(self, *inputs):
        if self.magnitude_std > 0:  # torch's RNG, so torch.manual_seed / worker seeding make it reproducible
            if math.isinf(self.magnitude_std):
                level = float(torch.rand(())) * self.level
            else:
                level = self.level + self.magnitude_std * float(torch.randn(()))
            self.magnitude = self._bin(level)
        return super().forward(*inputs)

    def extra_repr(self):
        return f"num_ops={self.num_ops}, magnitude={self.level:g}, magnitude_std={self.magnitude_std:g}"


def parse_auto_augment(spec, interpolation="bilinear", fill=None):
    """An augmentation policy string, timm's syntax, to a transform:

    - "rand-m9-mstd0.5-inc1": RandAugment, fields separated by "-" after "rand": m<magnitude 0..10>
      (default 9), n<operations per image> (default 2), mstd<magnitude std> (default 0; "inf" for
      uniform), inc<0|1> (accepted; torchvision's operations are always the increasing variant);
    - "autoaug" / "original": AutoAugment with the ImageNet policy; "trivial": TrivialAugmentWide;
    - "augmix" / "augmix-m3-w3-d-1-a1": AugMix (m severity, w mixture width, d chain depth, a alpha).
    Anything else raises ValueError. interpolation serves the geometric operations (rotate, shear,
    translate), which on tensors support only "nearest" and "bilinear"."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"auto_augment must be a non-empty string such as 'rand-m9-mstd0.5-inc1', got {spec!r}")
    interp = _interpolation(interpolation)
    name, *fields = spec.strip().lower().split("-")
    if name in ("autoaug", "original", "v0") and not fields:
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interp, fill=fill)
    if name in ("trivial", "trivialaugment", "ta_wide") and not fields:
        return v2.TrivialAugmentWide(interpolation=interp, fill=fill)
    if name == "rand":
        known = {"m": ("magnitude", float), "n": ("num_ops", int), "mstd": ("magnitude_std", float),
                 "inc": ("inc", int)}
        kwargs = _fields(spec, fields, known)
        if kwargs.pop("inc", 1) not in (0, 1):
            raise ValueError(f"bad auto_augment {spec!r}: inc must be 0 or 1")
        return RandAugment(**kwargs, interpolation=interp, fill=fill)
    if name == "augmix":
        # timm's "d-1" (random depth) arrives split as "d", "1": join a lone key with the next field
        joined, i = [], 0
        while i < len(fields):
            if fields[i] == "d" and i + 1 < len(fields):
                joined.append("d-" + fields[i + 1])
                i += 2
            else:
                joined.append(fields[i])
                i += 1
        known = {"m": ("severity", int), "w": ("mixture_width", int), "d": ("chain_depth", int),
                 "a": ("alpha", float)}
        return v2.AugMix(**_fields(spec, joined, known), interpolation=interp, fill=fill)
    raise ValueError(f"unknown auto_augment {spec!r}: expected 'rand-m<M>[-n<N>][-mstd<S>][-inc<0|1>]' "
                     "(e.g. 'rand-m9-mstd0.5-inc1'), 'augmix[-m<M>-w<W>-d<D>-a<A>]', 'autoaug' or 'trivial'")


def _fields(spec, fields, known):
    kwargs = {}
    for field in fields:
        match = re.fullmatch(r"([a-z]+)(-?(?:\d+\.?\d*|\.\d+|inf))", field)
        if not match or match.group(1) not in known:
            raise ValueError(f"bad auto_augment {spec!r}: cannot read {field!r}; fields are "
                             + ", ".join(f"{k}<{known[k][1].__name__}> ({known[k][0]})" for k in known))
        key, value = match.groups()
        name, kind = known[key]
        try:
            kwargs[name] = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except ValueError:
            raise ValueError(f"bad auto_augment {spec!r}: {key} takes a {kind.__name__}, got {value!r}") from None
    return kwargs


def _interpolation(name):
    if isinstance(name, InterpolationMode):
        return name
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATION)}, got {name!r}")
    return _INTERPOLATION[name]


def _pair(value, name):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    return value


def create_transform(img_size, train, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation="bicubic",
                     hflip=0.5, auto_augment=None, color_jitter=0.0, re_prob=0.0, scale=(0.08, 1.0),
                     ratio=(3 / 4, 4 / 3)):
    """timm's transforms on torchvision.transforms.v2.

    train: RandomResizedCrop(img_size, scale, ratio) -> RandomHorizontalFlip(hflip) -> auto_augment
    (see parse_auto_augment) or, without one, ColorJitter(color_jitter) -> float in [0, 1] -> Normalize
    -> RandomErasing(re_prob, per-pixel normal noise, timm's re_mode="pixel").
    eval: Resize(floor(img_size / crop_pct)) of the shorter side -> CenterCrop(img_size) -> Normalize.
    img_size is an int or (height, width). Input: PIL image or uint8 CHW tensor; output: float32 CHW."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    interp = _interpolation(interpolation)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean!r} and {std!r}")
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if not train:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        # resize so the centre crop keeps crop_pct of the shorter side, as timm does
        resize = [math.floor(s / crop_pct) for s in size]
        resize = resize[0] if size[0] == size[1] else resize
        return v2.Compose([v2.Resize(resize, interpolation=interp, antialias=True), v2.CenterCrop(size),
                           *to_float, v2.ToPureTensor()])
    ops = [v2.RandomResizedCrop(size, scale=_pair(scale, "scale"), ratio=_pair(ratio, "ratio"), interpolation=interp,
                                antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment:
        # rotate/shear on tensors support nearest and bilinear only: bilinear unless nearest was asked for
        ops.append(parse_auto_augment(auto_augment, "nearest" if interpolation == "nearest" else "bilinear"))
    elif color_jitter:
        jitter = tuple(color_jitter) if isinstance(color_jitter, (tuple, list)) else (float(color_jitter),) * 3
        if len(jitter) not in (3, 4):
            raise ValueError(f"color_jitter is a number or (brightness, contrast, saturation[, hue]), "
                             f"got {color_jitter!r}")
        ops.append(v2.ColorJitter(*jitter))
    ops += to_float
    if re_prob > 0:
        ops.append(v2.RandomErasing(p=re_prob, value="random"))
    return v2.Compose([*ops, v2.ToPureTensor()])


def resolve_data_config(model=None, **overrides):
    """The data settings of a model (its default_cfg from vitfast.create_model) with overrides applied:
    dict(img_size, mean, std, crop_pct, interpolation) — the keyword arguments of create_transform.
    Overrides that are None are ignored, so argparse defaults can be passed through."""
    cfg = getattr(model, "default_cfg", model) or {}
    input_size = cfg.get("input_size", (3, 224, 224))
    out = dict(img_size=input_size[-1] if input_size[-1] == input_size[-2] else tuple(input_size[-2:]),
               mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
               crop_pct=cfg.get("crop_pct", 0.875), interpolation=cfg.get("interpolation", "bicubic"))
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
