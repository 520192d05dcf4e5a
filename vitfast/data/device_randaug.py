"""RandAugment drawn per image on the device, for a whole batch at once (`--aa rand-...` with
`--data-on-device`).

The same policy as the host pipeline's RandAugment (transforms.py: torchvision's fourteen operations
on timm's 0..10 magnitude scale, one magnitude per image drawn from N(m, mstd)), but every image of a
batch draws its own operations, signs and magnitude, and nothing leaves the device:
- the geometric operations (rotate, shear, translate) are 2x3 maps composed with the crop into one
  resampling (DeviceImages.augment); a point that any of them sends outside the crop is filled black,
  as torchvision's default fill;
- the colour operations run over the whole batch on the 0..255 grid, each image taking the result of
  the operation it drew (torch.where), in the order drawn.

Against the host pipeline: geometry is applied before the colour operations whatever order they were
drawn in (the black fill therefore passes through a later colour operation), and each colour result is
rounded to the nearest integer where torchvision's uint8 path truncates."""
import math

import torch
import torch.nn.functional as F

from .transforms import _MAX_LEVEL, RandAugment, check_randaugment, parse_auto_augment

__all__ = ["DeviceRandAugment"]

# torchvision's RandAugment operations, in its order; the first six act on coordinates
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
_GEOMETRIC = 6
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class DeviceRandAugment:
    """num_ops operations per image from OPS (uniformly, with replacement), all at that image's level:
    magnitude + magnitude_std * N(0, 1) clipped to [0, 10] (uniform on [0, magnitude] when magnitude_std
    is inf). Signed operations flip sign with probability 1/2, per image and operation."""

    def __init__(self, num_ops=2, magnitude=9.0, magnitude_std=0.0):
        check_randaugment(num_ops, magnitude, magnitude_std)
        self.num_ops, self.magnitude, self.magnitude_std = int(num_ops), float(magnitude), float(magnitude_std)

    @classmethod
    def from_spec(cls, spec):
        """timm's 'rand-m9-n2-mstd0.5-inc1' string (parse_auto_augment's syntax); only RandAugment runs
        on the device."""
        policy = parse_auto_augment(spec)
        if not isinstance(policy, RandAugment):
            raise ValueError(f"only RandAugment ('rand-m<M>[-n<N>][-mstd<S>]') runs on the device, got {spec!r}; "
                             "train from the host (without --data-on-device) for other policies")
        return cls(policy.num_ops, policy.level, policy.magnitude_std)

    def draw(self, n, generator, device):
        """Per image: ops (n, num_ops) int64 indices into OPS, level (n,) in [0, 10], sign (n, num_ops) +-1."""
        ops = torch.randint(len(OPS), (n, self.num_ops), device=device, generator=generator)
        if math.isinf(self.magnitude_std):
            level = torch.rand(n, device=device, generator=generator) * self.magnitude
        else:
            level = self.magnitude + self.magnitude_std * torch.randn(n, device=device, generator=generator)
        sign = torch.where(torch.rand(n, self.num_ops, device=device, generator=generator) < 0.5, -1.0, 1.0)
        return ops, level.clamp(0, _MAX_LEVEL), sign

    @staticmethod
    def geometry(ops, level, sign, size):
        """(n, 3, 3) map from output to input coordinates (normalised, [-1, 1] across the image) of the
        geometric operations drawn: op k's map applied to op k+1's, as a chain of resamplings would."""
        n = ops.shape[0]
        out = torch.eye(3, device=ops.device).expand(n, 3, 3)
        frac, one, zero = level / _MAX_LEVEL, torch.ones_like(level), torch.zeros_like(level)
        last_row = torch.stack([zero, zero, one], 1).unsqueeze(1)
        for k in range(ops.shape[1]):
            s = sign[:, k]
            # torchvision: shear angle atan(magnitude), i.e. a factor of magnitude, about the top (left)
            # edge (centre=[0, 0]): x_in = x + f * (y + 1); shifts by whole pixels (int(magnitude))
            shear = s * 0.3 * frac
            shift = s * 2 * torch.floor(frac * 150 / 331 * size) / size
            cos, sin = torch.cos(s * math.radians(30) * frac), torch.sin(s * math.radians(30) * frac)
            maps = torch.stack([torch.stack(rows, 1) for rows in (
                (one, zero, zero, zero, one, zero),  # Identity (and every colour operation)
                (one, shear, shear, zero, one, zero),  # ShearX
                (one, zero, zero, shear, one, shear),  # ShearY
                (one, zero, shift, zero, one, zero),  # TranslateX
                (one, zero, zero, zero, one, shift),  # TranslateY
                (cos, -sin, zero, sin, cos, zero))], 1)  # Rotate, about the centre
            pick = torch.where(ops[:, k] < _GEOMETRIC, ops[:, k], 0).view(n, 1, 1).expand(n, 1, 6)
            out = out @ torch.cat([maps.gather(1, pick).view(n, 2, 3), last_row], 1)
        return out

    @staticmethod
    def colour(x, ops, level, sign):
        """x: float (n, 3, H, W) on the 0..255 integer grid; the colour operations drawn, in order."""
        frac = (level / _MAX_LEVEL).view(-1, 1, 1, 1)
        for k in range(ops.shape[1]):
            op = ops[:, k].view(-1, 1, 1, 1)  # every operation runs on the whole batch: no host sync
            factor = 1 + sign[:, k].view(-1, 1, 1, 1) * 0.9 * frac
            gray = (x * x.new_tensor(_GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)
            cases = {
                6: lambda: x * factor,
                7: lambda: _blend(x, gray, factor),
                8: lambda: _blend(x, gray.mean((2, 3), keepdim=True), factor),
                9: lambda: _blend(x, _smooth(x), factor),
                10: lambda: _posterize(x, 8 - torch.round(4 * frac)),
                11: lambda: torch.where(x >= 255 * (1 - frac), 255 - x, x),
                12: lambda: _autocontrast(x),
                13: lambda: _equalize(x),
            }
            for index, fn in cases.items():
                x = torch.where(op == index, fn().round().clamp(0, 255), x)
        return x


def _blend(x, other, factor):
    return other + factor * (x - other)


def _smooth(x):
    """torchvision's sharpness degenerate: 3x3 [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; edges untouched."""
    kernel = x.new_ones(3, 1, 3, 3)
    kernel[:, :, 1, 1] = 5
    inner = F.conv2d(x, kernel / 13, groups=3).round()
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _posterize(x, bits):
    step = torch.exp2(8 - bits)
    return torch.floor(x / step) * step


def _autocontrast(x):
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) * 255 / span.clamp(min=1), x)


def _equalize(x):
    """PIL's (and torchvision's) equalize per image and channel: a lookup table from the histogram,
    step = (pixels - count of the brightest value) // 255; an image with step 0 is unchanged."""
    n, c, h, w = x.shape
    values = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, values, torch.ones_like(values, dtype=torch.float))
    last = hist.gather(1, values.amax(1, keepdim=True))
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) - hist + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                    rounding_mode="floor").clamp(max=255)
    out = torch.where(step > 0, lut.gather(1, values), values.float())
    return out.view(n, c, h, w)
