"""Multi-crop augmentation for self-supervised pretraining (DINO; VISSL's ImgPilToMultiCrop): one image
-> a list of crops, num_crops[i] of them at size_crops[i] px from crop_scales[i] of its area, each flipped,
colour-jittered, grayscaled, blurred and (DINO's second global crop) solarised.

DINO's settings (ViT-S/16, 224 px): 2 global crops of 224 from (0.4, 1) of the image, 8 local ones of 96
from (0.05, 0.4); colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2; Gaussian blur of radius
0.1-2 px with p 1.0 / 0.1 on the two global crops and 0.5 on local ones; solarisation 0.2 on the second."""
import torch
from torchvision.transforms import InterpolationMode, v2

__all__ = ["MultiCrop", "plan_crops"]


def plan_crops(img_size, patch, num_crops=None, size_crops=None, crop_scales=None, default_crops=(2, 8),
               fractions=(1.0, 96 / 224), default_scales=((0.4, 1.0), (0.05, 0.4))):
    """(num_crops, size_crops, crop_scales as pairs), the defaults (DINO's unless given) where not set,
    the sizes following the image: each group `fractions` of the training image size, rounded to a
    whole number of patches (at least 2 x 2). ValueError names what does not fit."""
    num_crops = list(num_crops or default_crops)
    if size_crops is None:
        size_crops = [max(2 * patch, patch * round(img_size * f / patch)) for f in fractions][:len(num_crops)]
    size_crops = list(size_crops)
    if crop_scales is None:
        crop_scales = [list(s) for s in default_scales][:len(num_crops)]
    elif crop_scales and not isinstance(crop_scales[0], (list, tuple)):  # flat: lo,hi,lo,hi,...
        if len(crop_scales) % 2:
            raise ValueError(f"crop_scales: pairs of lo,hi expected, got {len(crop_scales)} numbers")
        crop_scales = [crop_scales[i:i + 2] for i in range(0, len(crop_scales), 2)]
    crop_scales = [list(map(float, s)) for s in crop_scales]
    if not len(num_crops) == len(size_crops) == len(crop_scales):
        raise ValueError(f"num_crops {num_crops}, size_crops {size_crops} and crop_scales {crop_scales} must have "
                         "one entry per crop group")
    if num_crops[0] < 2:
        raise ValueError(f"num_crops: the first (global) group needs at least 2 crops, got {num_crops[0]}")
    for n, size, (lo, hi) in zip(num_crops, size_crops, crop_scales):
        if n < 1:
            raise ValueError(f"num_crops: each group needs at least one crop, got {num_crops}")
        if size < patch or size % patch:
            raise ValueError(f"size_crops: a crop of {size} px is not a whole number of the model's {patch}-px "
                             f"patches (the smallest is {patch})")
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scales: each pair must be 0 < lo <= hi <= 1, got {[lo, hi]}")
    return num_crops, size_crops, crop_scales


class MultiCrop:
    """image (PIL or uint8 CHW tensor) -> list of normalised float32 crops, group by group.

    blur: blur probability of each crop (default DINO's: 1.0 and 0.1 for the two global crops, 0.5 for
    the rest); solarize: probability for the second crop (DINO: 0.2; VISSL's SwAV: 0); colour: the
    jitter's (brightness, contrast, saturation, hue) (DINO: 0.4, 0.4, 0.2, 0.1; SwAV's colour distortion
    at strength 1: 0.8, 0.8, 0.8, 0.2), applied with probability `jitter`. Blur radii are DINO's 0.1-2 px
    at 224 px, scaled with the crop."""

    def __init__(self, num_crops, size_crops, crop_scales, mean, std, blur=None, solarize=0.2, jitter=0.8,
                 grayscale=0.2, colour=(0.4, 0.4, 0.2, 0.1)):
        self.num_crops, self.size_crops, self.crop_scales = list(num_crops), list(size_crops), list(crop_scales)
        total = sum(self.num_crops)
        blur = list(blur) if blur is not None else [1.0, 0.1] + [0.5] * (total - 2)
        if len(blur) != total:
            raise ValueError(f"blur: one probability per crop ({total}), got {len(blur)}")
        self.blur, self.solarize, self.jitter, self.grayscale = blur, solarize, jitter, grayscale
        self.colour = tuple(colour)
        colour = [v2.RandomHorizontalFlip(0.5),
                  v2.RandomApply([v2.ColorJitter(*self.colour)], p=jitter),
                  v2.RandomGrayscale(grayscale)]
        to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
                    v2.ToPureTensor()]
        self.crops, i = [], 0
        for n, size, scale in zip(num_crops, size_crops, crop_scales):
            for _ in range(n):
                ops = [v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC,
                                            antialias=True), *colour]
                if blur[i] > 0:
                    kernel = 2 * max(1, round(size / 20)) + 1  # PIL's radius-2 blur spans ~10% of 224 px
                    sigma = (0.1 * size / 224, 2.0 * size / 224)
                    ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=sigma)], p=blur[i]))
                if i == 1 and solarize > 0:
                    ops.append(v2.RandomSolarize(128, p=solarize))
                self.crops.append(v2.Compose(ops + to_float))
                i += 1

    def __call__(self, image):
        if torch.is_tensor(image) and image.dtype != torch.uint8:
            raise TypeError(f"MultiCrop takes PIL images or uint8 tensors, got a {image.dtype} tensor")
        return [crop(image) for crop in self.crops]
