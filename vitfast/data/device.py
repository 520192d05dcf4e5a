"""Training images kept on the device, augmented there in batches (`--data-on-device`).

A small dataset (CIFAR's 50,000 32x32 images are 150 MB as uint8) is decoded once and then never
touches the host again: each step gathers its batch by index on the device and draws
RandomResizedCrop + horizontal flip for every image at once, as one affine grid_sample. A GPU that
trains a small ViT at tens of thousands of images per second then waits on nothing; a DataLoader
would need many processes of PIL work per GPU to keep up.

RandAugment (device_randaug.py) and random erasing (timm's RandomErasing, "pixel" mode) are drawn per
image as well. What it does not do, against create_transform's CPU pipeline: colour jitter and
policies other than RandAugment (refused by the training configuration), antialiasing when a crop is
shrunk (crops of images stored at the training size are only ever enlarged), and integer crop boxes
(the boxes are continuous; the sampling of scale and log-ratio, ten tries and the fallback follow
torchvision's)."""
import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

__all__ = ["DeviceImages", "decode_transform"]

_TRIES = 10  # torchvision's RandomResizedCrop attempts before its fallback
_CHUNK_BYTES, _CHUNK_BATCHES = 64 << 20, 16  # batches augmented together: at most 64 MiB of float32, 16 batches


def decode_transform(img_size):
    """PIL image or uint8 CHW tensor -> uint8 (3, img_size, img_size): shorter side resized to img_size
    (antialiased), centre-cropped. Images already that size pass through unchanged."""
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
                       v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])


class DeviceImages:
    """dataset (yielding decode_transform's uint8 images) held on `device`; batches(order, ...) yields
    normalised float32 (B, 3, S, S) batches with their int64 labels, both on the device."""

    def __init__(self, dataset, device, mean, std, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, re_prob=0.0,
                 randaug=None, workers=0, max_fraction=0.5):
        device = torch.device(device)
        first = dataset[0][0]
        if not (isinstance(first, torch.Tensor) and first.dtype == torch.uint8 and first.ndim == 3):
            raise ValueError("DeviceImages needs a dataset of uint8 (3, H, W) images (transform=decode_transform(size))")
        need = len(dataset) * first.numel()
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if need > max_fraction * free:
                raise ValueError(f"the {len(dataset)} training images take {need / 2**30:.2f} GiB as uint8, more than "
                                 f"{max_fraction:.0%} of the {free / 2**30:.2f} GiB free on {device}; train from the "
                                 "host (without --data-on-device)")
        self.device, self.hflip, self.re_prob, self.randaug = device, float(hflip), float(re_prob), randaug
        self.scale, self.log_ratio = tuple(map(float, scale)), (math.log(ratio[0]), math.log(ratio[1]))
        loader = torch.utils.data.DataLoader(dataset, batch_size=512, num_workers=workers,
                                             pin_memory=device.type == "cuda")
        images = torch.empty((len(dataset), *first.shape), dtype=torch.uint8, device=device)
        labels, at = [], 0
        for x, y in loader:  # decoded by `workers` processes, copied in chunks: no host copy of the whole set
            images[at:at + len(x)].copy_(x, non_blocking=True)
            labels.append(y)
            at += len(x)
        self.images, self.labels = images, torch.cat(labels).to(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.generator = torch.Generator(device)

    def __len__(self):
        return len(self.images)

    def _fitting_boxes(self, n, area_range, log_ratio):
        """(w, h, fits) of the first of ten (area, log aspect) draws per image that fits in the unit square."""
        g, dev = self.generator, self.device
        area = torch.empty(n, _TRIES, device=dev).uniform_(*area_range, generator=g)
        aspect = torch.empty(n, _TRIES, device=dev).uniform_(*log_ratio, generator=g).exp()
        w, h = (area * aspect).sqrt(), (area / aspect).sqrt()
        fits = (w <= 1) & (h <= 1)
        pick = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits (0 when none)
        return w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1), fits.any(dim=1)

    def crop_boxes(self, n, scale=None):
        """(n, 4) crops as (x0, y0, w, h), fractions of a square image: torchvision's RandomResizedCrop
        draws (area fraction ~ U(scale), log aspect ~ U(log ratio)) up to ten times and keeps the first
        box that fits, else the whole image at the nearest allowed aspect. scale: this call's area range
        (default: the one given at construction)."""
        w, h, fits = self._fitting_boxes(n, tuple(map(float, scale)) if scale else self.scale, self.log_ratio)
        lo, hi = math.exp(self.log_ratio[0]), math.exp(self.log_ratio[1])
        fw, fh = (1.0, 1.0 / lo) if lo > 1 else ((hi, 1.0) if hi < 1 else (1.0, 1.0))  # torchvision's fallback
        w, h = torch.where(fits, w, fw), torch.where(fits, h, fh)
        offsets = torch.rand(n, 2, device=self.device, generator=self.generator)
        return torch.stack([offsets[:, 0] * (1 - w), offsets[:, 1] * (1 - h), w, h], dim=1)

    def augment(self, images):
        """uint8 (B, 3, S, S) -> float32 normalised crops, flipped with probability hflip, then
        RandAugment'ed and randomly erased where asked for."""
        n, size = images.shape[0], images.shape[-1]
        x0, y0, w, h = self.crop_boxes(n).unbind(1)
        flip = torch.where(torch.rand(n, device=self.device, generator=self.generator) < self.hflip, -1.0, 1.0)
        zero = torch.zeros_like(w)
        # output x in [-1, 1] reads input x0 .. x0 + w (align_corners=False: -1 and 1 are the image's edges)
        theta = torch.stack([torch.stack([w * flip, zero, 2 * x0 + w - 1], 1),
                             torch.stack([zero, h, 2 * y0 + h - 1], 1)], 1)
        shape = [n, 3, size, size]
        if self.randaug is not None:  # its rotations, shears and shifts act on the flipped crop
            ops, level, sign = self.randaug.draw(n, self.generator, self.device)
            geometry = self.randaug.geometry(ops, level, sign, size)  # (n, 3, 3)
            theta = theta @ geometry
            inside = (F.affine_grid(geometry[:, :2], shape, align_corners=False).abs() <= 1).all(-1).unsqueeze(1)
        grid = F.affine_grid(theta, shape, align_corners=False)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.randaug is not None:  # black outside the moved crop; colour operations on the 0..255 grid
            out = self.randaug.colour(torch.where(inside, out, 0.0).round(), ops, level, sign)
        out = (out - self.mean) / self.std
        return self.erase(out) if self.re_prob > 0 else out

    def erase(self, x):
        """timm's RandomErasing per image (probability re_prob, area 2%..1/3, aspect 0.3..3.3, ten tries,
        none if none fits), the box filled with normal noise per pixel, after normalisation."""
        n, _, size, _ = x.shape
        g, dev = self.generator, self.device
        w, h, fits = self._fitting_boxes(n, (0.02, 1 / 3), (math.log(0.3), math.log(1 / 0.3)))
        w, h = (w * size).round(), (h * size).round()  # timm's whole-pixel boxes
        at = torch.rand(n, 3, device=dev, generator=g)
        x0, y0 = (at[:, 0] * (size - w + 1)).floor(), (at[:, 1] * (size - h + 1)).floor()
        erase = fits & (at[:, 2] < self.re_prob) & (w < size) & (h < size)
        pos = torch.arange(size, device=dev, dtype=torch.float32)
        cols = (pos >= x0[:, None]) & (pos < (x0 + w)[:, None])  # (n, size)
        rows = (pos >= y0[:, None]) & (pos < (y0 + h)[:, None])
        mask = (rows[:, :, None] & cols[:, None, :] & erase[:, None, None])[:, None]  # (n, 1, size, size)
        return torch.where(mask, torch.randn(x.shape, device=dev, generator=g), x)

    def batches(self, order, batch_size, seed, epoch, skip=0):
        """The full batches of one epoch's index order (this rank's sampler), from batch `skip` on.
        Small images are augmented several batches at a time (_CHUNK_BYTES of float32 per group: fewer,
        larger launches); each group's draws come from a generator seeded by (seed, epoch, its first
        batch), so a resumed run sees the images the uninterrupted one did."""
        order = torch.as_tensor(list(order), dtype=torch.long).to(self.device, non_blocking=True)
        total = len(order) // batch_size
        group = max(1, min(_CHUNK_BATCHES, _CHUNK_BYTES // (batch_size * self.images[0].numel() * 4)))
        for first in range(skip - skip % group, total, group):
            count = min(group, total - first)
            self.generator.manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + first)
            index = order[first * batch_size:(first + count) * batch_size]
            images, labels = self.augment(self.images[index]), self.labels[index]
            for b in range(max(skip - first, 0), count):
                at = slice(b * batch_size, (b + 1) * batch_size)
                yield [v[at] for v in images] if isinstance(images, list) else images[at], labels[at]
