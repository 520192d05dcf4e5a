"""Attention rollout (Abnar & Zuidema 2020): how much each patch feeds the class token through all
layers, from one forward pass that returns every layer's attention probabilities."""
import math
import os

import torch
import torch.nn.functional as F


@torch.no_grad()
def attention_rollout(model, x, discard_ratio=0.0):
    """(B, grid_h, grid_w) maps for images x, from model.forward_features(x, return_attn="probs")."""
    _, attns = model.forward_features(x, return_attn="probs")
    n = attns[0].shape[-1]
    rollout = torch.eye(n).expand(x.shape[0], n, n).to(x)
    for a in attns:
        a = a.mean(dim=1)  # heads
        if discard_ratio:
            flat = a.flatten(1)
            k = int(flat.shape[1] * discard_ratio)
            idx = flat.topk(k, dim=1, largest=False).indices
            flat.scatter_(1, idx, 0)
        a = 0.5 * a + 0.5 * torch.eye(n, device=x.device)  # the residual path
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    prefix = getattr(model, "num_prefix_tokens", 1)
    cls_to_patches = rollout[:, 0, prefix:]
    gh, gw = model.patch_embed.grid_size
    maps = cls_to_patches.reshape(-1, gh, gw)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def jet(x):
    """The jet colormap of values x in [0, 1] (any shape): (3, *x.shape) RGB in [0, 1], blue to red
    (piecewise-linear ramps; no plotting library needed)."""
    return torch.stack([(1.5 - (4 * x - c).abs()).clamp(0, 1) for c in (3, 2, 1)])


def rollout_figure(image, heat, min_side=224, gap=4):
    """One picture of a rollout: the image beside the image overlaid with the heat map, as (3, H, W) RGB
    in [0, 1]. Both are enlarged by a whole factor so the short side is at least min_side pixels:
    the image nearest-neighbour (its pixels stay sharp; a 32x32 image is otherwise a thumbnail), the
    heat map bilinear from its patch grid (it is a smooth field); a white gap of `gap` pixels between.
    image: (3, h, w) in [0, 1]; heat: (grid_h, grid_w) in [0, 1]."""
    h, w = image.shape[-2:]
    scale = max(1, math.ceil(min_side / min(h, w)))
    size = (h * scale, w * scale)
    big = F.interpolate(image[None], size=size, mode="nearest")[0]
    heat = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
    overlay = 0.5 * big + 0.5 * jet(heat)
    return torch.cat([big, torch.ones(3, size[0], gap), overlay], dim=2)


def rollout_path(folder, i):
    """Where save_attention_rollouts writes the map of image i (vitfast.eval checks these before a run)."""
    return os.path.join(folder, f"rollout_{i:04d}.png")


def save_attention_rollouts(model, dataset, count, folder, device, mean=None, std=None, desc=None):
    """For the first `count` images of dataset, folder/rollout_NNNN.png: the image and its rollout
    overlay side by side (rollout_figure); returns their paths. mean, std: the normalisation the
    dataset's transform applied, undone so the image shows its own colours (None: stretched to [0, 1]).
    desc: show the work as a progress bar of that name (vitfast.progress)."""
    from PIL import Image

    from . import progress
    from .files import atomic_write

    os.makedirs(folder, exist_ok=True)
    model.eval()
    paths = []
    n = min(count, len(dataset))
    for i in progress.bar(range(n), desc=desc, unit="image", announce=True) if desc else range(n):
        x, _ = dataset[i]
        heat = attention_rollout(model, x.unsqueeze(0).to(device))[0].float().cpu()
        img = x.float().cpu()
        if mean is not None and std is not None:
            img = img * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
        else:
            img = (img - img.amin()) / (img.amax() - img.amin()).clamp_min(1e-12)
        figure = rollout_figure(img.clamp(0, 1), heat)
        picture = Image.fromarray((figure.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
        path = rollout_path(folder, i)
        atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
        paths.append(path)
    return paths
