"""The built-in dataset: procedurally drawn 32x32 RGB textures in 10 classes, generated (no files,
no download) deterministically from a seed, kept in memory, and cached in the user's vitfast cache
(builtin/ there) so the next process loads them in a fraction of a second instead of drawing them
again (about 3 s on one core); the cache's file names carry a digest of this generator's source.

Each class is a family of patterns, not a picture: every image draws its own period, phase, centre,
rotation jitter, edge sharpness, foreground/background colours, illumination gradient and pixel noise.
Colour, position and phase carry no class information, so a linear model on pixels does poorly
(~22% against 10% chance), while the local structure a patch embedding sees (orientation, curvature,
periodicity, edges or their absence) separates the classes: a 0.46M-parameter ViT (img 32, patch 4,
dim 96, depth 4, 3 heads) trained from scratch with AdamW (lr 1.5e-3, wd 0.05, batch 64, 30 warmup
steps, cosine over 500 steps = 3.2 epochs) passes 90% validation accuracy after 300-400 steps and ends
near 95%, in about 90 s on one CPU core. Train without zooming crops (create_transform(..., scale=(1, 1)),
eval crop_pct=1): the classes differ in texture scale, and RandomResizedCrop(scale=(0.25, 1)) costs
~30 points in such a short run. Labels survive horizontal flips, RandAugment's rotations (at most
30 degrees; the two orientation classes are 90 degrees apart, with +-12 degrees of jitter) and colour
operations: no class is the mirror image or a small rotation of another.
"""
import functools
import hashlib
import os
import zipfile

import numpy as np
import torch

from ..files import atomic_write, cache_dir as user_cache_dir
from .arrays import ArrayDataset

__all__ = ["BUILTIN_CLASSES", "BuiltinDataset", "generate_builtin"]

BUILTIN_CLASSES = ["hstripes", "vstripes", "checker", "rings", "spokes", "dots", "grid", "disc", "clouds",
                   "speckle"]
BUILTIN_SIZES = {"train": 10_000, "val": 2_000}  # 'test' is an alias of 'val'
IMG_SIZE = 32
_SPLIT_STREAM = {"train": 0, "val": 1}
_CHUNK = 1000  # images drawn at a time
_cache = {}  # (split, seed, n, img_size) -> (images uint8 N,H,W,3, labels int64 N)


def _soft(z, k):
    """A soft step 0 -> 1 through z = 0 with slope k (an anti-aliased edge)."""
    return 0.5 + 0.5 * np.tanh(k * z)


def _rotate(x, y, theta):
    c, s = np.cos(theta), np.sin(theta)
    return x * c + y * s, -x * s + y * c


def _field(cls, rng, n, size):
    """(n, size, size) intensities in [0, 1] for n images of class index cls."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    x, y = xx[None], yy[None]  # (1, H, W), broadcast against per-image parameters (n, 1, 1)

    def u(lo, hi):
        return rng.uniform(lo, hi, (n, 1, 1))

    centre_x, centre_y = u(0.25 * size, 0.75 * size), u(0.25 * size, 0.75 * size)
    cx, cy = x - centre_x, y - centre_y
    jitter = np.deg2rad(u(-12.0, 12.0))  # small enough to keep the class under +-30 degree rotations
    sharp = u(1.5, 6.0)
    name = BUILTIN_CLASSES[cls]
    if name in ("hstripes", "vstripes"):
        xr, yr = _rotate(cx, cy, jitter)
        along = yr if name == "hstripes" else xr
        return _soft(np.sin(2 * np.pi * along / u(4.0, 10.0) + u(0, 2 * np.pi)), sharp)
    if name == "checker":
        xr, yr = _rotate(cx, cy, jitter)
        period = u(5.0, 12.0)
        return _soft(np.sin(2 * np.pi * xr / period) * np.sin(2 * np.pi * yr / period), 2 * sharp)
    if name == "rings":
        return _soft(np.sin(2 * np.pi * np.hypot(cx, cy) / u(5.0, 9.0) + u(0, 2 * np.pi)), sharp)
    if name == "spokes":  # 5..9 pairs of crisp wedges around a centre inside the image
        arms = rng.integers(5, 10, (n, 1, 1))
        return _soft(np.sin(arms * np.arctan2(cy, cx) + u(0, 2 * np.pi)), 2 * sharp)
    if name in ("dots", "grid"):
        xr, yr = _rotate(cx, cy, jitter)
        period = u(7.0, 12.0) if name == "dots" else u(5.0, 10.0)
        du = (np.mod(xr / period, 1.0) - 0.5) * period  # signed distance to the nearest cell centre
        dv = (np.mod(yr / period, 1.0) - 0.5) * period
        if name == "dots":  # sparse polka dots: radius 1.4..3.6 px, at least 2.8 px apart
            return _soft(u(0.2, 0.3) * period - np.hypot(du, dv), sharp)
        line = np.minimum(0.5 * period - np.abs(du), 0.5 * period - np.abs(dv))  # distance to a grid line
        return _soft(u(0.5, 1.0) - line, sharp)
    if name == "disc":
        return _soft(u(5.0, 12.0) - np.hypot(cx, cy), sharp)
    if name == "clouds":  # smooth random shading without edges: a sum of five random low-frequency waves
        total = 0.0
        for _ in range(5):
            angle, period = u(0, np.pi), u(10.0, 24.0)
            total = total + np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + u(0, 2 * np.pi))
        return _soft(total, u(0.3, 0.6))
    if name == "speckle":  # random binary cells of 1 or 2 pixels
        cell = rng.integers(1, 3, n)
        out = np.empty((n, size, size))
        for c in (1, 2):
            idx = np.flatnonzero(cell == c)
            bits = rng.random((len(idx), -(-size // c), -(-size // c)))
            out[idx] = np.repeat(np.repeat(bits, c, 1), c, 2)[:, :size, :size]
        return _soft(out - 0.5, 4 * sharp)
    raise AssertionError(name)


def generate_builtin(split="train", seed=0, n=None, img_size=IMG_SIZE):
    """(images uint8 (N, H, W, 3), labels int64 (N,)) for a split, balanced over the 10 classes.

    Deterministic from (split, seed): the same arguments give the same bytes (numpy's PCG64)."""
    if split == "test":
        split = "val"
    if split not in _SPLIT_STREAM:
        raise ValueError(f"the builtin dataset has splits 'train', 'val' and 'test' (= 'val'), not {split!r}")
    n = BUILTIN_SIZES[split] if n is None else int(n)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _SPLIT_STREAM[split]])))
    labels = rng.permutation(np.arange(n) % len(BUILTIN_CLASSES))  # exactly balanced when 10 divides n
    images = np.empty((n, img_size, img_size, 3), np.uint8)
    for start in range(0, n, _CHUNK):  # in chunks: float64 work arrays for all images would take ~0.7 GB
        images[start:start + _CHUNK] = _draw(labels[start:start + _CHUNK], rng, img_size)
    return images, labels.astype(np.int64)


def _draw(labels, rng, size):
    n = len(labels)
    intensity = np.empty((n, size, size))
    for c in range(len(BUILTIN_CLASSES)):
        idx = np.flatnonzero(labels == c)
        intensity[idx] = _field(c, rng, len(idx), size)
    # colours: foreground and background drawn independently, at least 0.3 apart in mean absolute value
    fg, bg = rng.random((n, 3)), rng.random((n, 3))
    close = np.abs(fg - bg).mean(1) < 0.3
    while close.any():
        fg[close] = rng.random((close.sum(), 3))
        close = np.abs(fg - bg).mean(1) < 0.3
    img = bg[:, None, None, :] + (fg - bg)[:, None, None, :] * intensity[..., None]
    # an illumination gradient in a random direction, then pixel noise of a random strength
    coords = (np.arange(size) + 0.5) / size - 0.5
    angle = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    ramp = coords[None, None, :] * np.cos(angle) + coords[None, :, None] * np.sin(angle)
    img += (rng.uniform(-0.3, 0.3, n)[:, None, None] * ramp)[..., None]
    img += rng.normal(0.0, 1.0, img.shape) * rng.uniform(0.0, 0.12, n)[:, None, None, None]
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


class BuiltinDataset(ArrayDataset):
    """The generated dataset: (uint8 CHW image tensor, label) before the transform.

    The arrays are generated once per (split, seed, n) and process, then shared by every instance, and
    kept in an .npz file in cache_dir (default: builtin/ in the user's vitfast cache) so other processes
    skip the generation."""

    def __init__(self, split="train", transform=None, seed=0, n=None, cache_dir=None):
        split = "val" if split == "test" else split
        key = (split, int(seed), n, IMG_SIZE)
        if key not in _cache:
            _cache[key] = _load_or_generate(key, cache_dir or os.path.join(user_cache_dir(), "builtin"))
        images, labels = _cache[key]
        super().__init__(torch.from_numpy(images).permute(0, 3, 1, 2), labels.tolist(), BUILTIN_CLASSES, transform,
                         root="builtin", split=split)  # a (N, 3, H, W) view of the cached array: no copy
        self.seed = seed


@functools.cache
def _generator_digest():
    """A digest of this file: a cached array drawn by another version of the generator is never read."""
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def _load_or_generate(key, cache_dir):
    """The arrays of `key` from cache_dir's .npz file, else generated and written there whole (atomic_write);
    a folder that cannot be written leaves them in this process's memory only."""
    split, seed, n, size = key
    name = f"builtin_{split}_seed{seed}_n{n or BUILTIN_SIZES[split]}_{size}_{_generator_digest()}.npz"
    path = os.path.join(cache_dir, name)
    try:
        with np.load(path) as f:
            return f["images"], f["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # absent, or not a file of ours: draw them
        pass
    images, labels = generate_builtin(split, seed, n, size)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)

    try:
        atomic_write(path, write)
    except OSError:  # a read-only or full disk: the cache only saves time
        pass
    return images, labels


def _contact_sheet(path, per_class=8, seed=0):  # pragma: no cover - a picture of the data, for people
    from PIL import Image

    images, labels = generate_builtin("val", seed)
    rows = [np.concatenate(list(images[labels == c][:per_class]), 1) for c in range(len(BUILTIN_CLASSES))]
    Image.fromarray(np.concatenate(rows, 0)).resize((per_class * 96, len(rows) * 96), Image.NEAREST).save(path)

