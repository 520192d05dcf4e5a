"""Multi-crop augmentation of whole batches on the device (`--ssl` with `--data-on-device`): the crops
of MultiCrop (multicrop.py) drawn for every image at once, one affine grid_sample per crop, then colour
jitter, grayscale, Gaussian blur and solarisation with per-crop random parameters as tensor operations.
Per image on the host the same pipeline costs ~20 ms of PIL/torchvision calls (ten crops): a CPU
spends seconds per batch there, a GPU waits. Differences from the host pipeline: bilinear sampling
without antialiasing (a shrunk crop aliases a little), continuous crop boxes, and the four colour
jitters applied in one fixed order (torchvision draws one per image; drawing one here would make the
host wait for the device)."""
import torch
import torch.nn.functional as F

from .device import DeviceImages

__all__ = ["DeviceMultiCrop"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale


def _gray(x):
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    out = []
    for n in (5.0, 3.0, 1.0):  # channel = v - v s max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6
        k = (n + 6.0 * h) % 6.0
        out.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0, 1))
    return torch.stack(out, dim=1)


class DeviceMultiCrop(DeviceImages):
    """DeviceImages whose batches are lists of crops, group by group as MultiCrop makes them."""

    def __init__(self, dataset, device, mean, std, multicrop, workers=0):
        super().__init__(dataset, device, mean, std, workers=workers)
        self.plan = multicrop

    def _uniform(self, n, lo, hi):
        return torch.empty(n, device=self.device).uniform_(lo, hi, generator=self.generator)

    def _chance(self, n, p):
        return torch.rand(n, device=self.device, generator=self.generator) < p

    def _crop(self, images, size, scale):
        n = images.shape[0]
        x0, y0, w, h = self.crop_boxes(n, scale).unbind(1)
        flip = torch.where(self._chance(n, 0.5), -1.0, 1.0)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w * flip, zero, 2 * x0 + w - 1], 1),
                             torch.stack([zero, h, 2 * y0 + h - 1], 1)], 1)
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _colour(self, x):
        """ColorJitter(*plan.colour) with probability `jitter`, then grayscale with probability `grayscale`,
        on [0, 1] images."""
        n, plan = x.shape[0], self.plan
        on = self._chance(n, plan.jitter).view(n, 1, 1, 1)
        b, c, s, h = plan.colour
        factors = {"brightness": self._uniform(n, max(0, 1 - b), 1 + b),
                   "contrast": self._uniform(n, max(0, 1 - c), 1 + c),
                   "saturation": self._uniform(n, max(0, 1 - s), 1 + s), "hue": self._uniform(n, -h, h)}
        jittered = x
        for name in ("brightness", "contrast", "saturation", "hue"):  # fixed: no host sync to draw an order
            f = factors[name].view(n, 1, 1, 1)
            if name == "brightness":
                jittered = (jittered * f).clamp(0, 1)
            elif name == "contrast":
                mean = _gray(jittered).mean(dim=(1, 2, 3), keepdim=True)
                jittered = ((jittered - mean) * f + mean).clamp(0, 1)
            elif name == "saturation":
                gray = _gray(jittered)
                jittered = ((jittered - gray) * f + gray).clamp(0, 1)
            else:
                h, s, v = _rgb_to_hsv(jittered)
                jittered = _hsv_to_rgb((h + f.view(n, 1, 1)) % 1.0, s, v)
        x = torch.where(on, jittered, x)
        gray = self._chance(n, plan.grayscale).view(n, 1, 1, 1)
        return torch.where(gray, _gray(x).expand_as(x), x)

    def _blur(self, x, p):
        """Gaussian blur with probability p, sigma ~ U(0.1, 2) x size / 224 (DINO's radius at 224 px),
        separable, per image, reflecting at the edges."""
        n, _, size, _ = x.shape
        radius = max(1, round(size / 20))
        sigma = self._uniform(n, 0.1 * size / 224, 2.0 * size / 224).view(n, 1)
        taps = torch.arange(-radius, radius + 1, device=self.device, dtype=x.dtype).view(1, -1)
        kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(3, dim=0)  # (n*3, K)
        flat = F.pad(x.reshape(1, n * 3, size, size), (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, kernel.view(n * 3, 1, 1, -1), groups=n * 3)
        flat = F.conv2d(flat, kernel.view(n * 3, 1, -1, 1), groups=n * 3)
        return torch.where(self._chance(n, p).view(n, 1, 1, 1), flat.view(n, 3, size, size), x)

    def augment(self, images):
        """uint8 (B, 3, S, S) -> list of normalised float32 crops, MultiCrop's groups in order."""
        plan, x = self.plan, images.float() / 255
        crops, i = [], 0
        for count, size, scale in zip(plan.num_crops, plan.size_crops, plan.crop_scales):
            for _ in range(count):
                c = self._colour(self._crop(x, size, scale))
                if plan.blur[i] > 0:
                    c = self._blur(c, plan.blur[i])
                if i == 1 and plan.solarize > 0:
                    solar = self._chance(c.shape[0], plan.solarize).view(-1, 1, 1, 1)
                    c = torch.where(solar & (c >= 0.5), 1.0 - c, c)
                crops.append((c * 255 - self.mean) / self.std)
                i += 1
        return crops
