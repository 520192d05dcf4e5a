"""Attention rollout (Abnar & Zuidema 2020): how much each patch feeds the class token through all
layers, from one forward pass that returns every layer's attention probabilities."""
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


def save_attention_rollouts(model, dataset, count, folder, device):
    """PNG overlays of the rollout for the first `count` images of dataset; returns their paths."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        x, _ = dataset[i]
        x = x.unsqueeze(0).to(device)
        heat = attention_rollout(model, x)[0]
        heat = F.interpolate(heat[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].cpu()
        img = x[0].cpu()
        img = (img - img.amin()) / (img.amax() - img.amin()).clamp_min(1e-12)
        red = torch.stack([heat, torch.zeros_like(heat), 1 - heat])
        blend = (0.55 * img + 0.45 * red).clamp(0, 1)
        path = os.path.join(folder, f"rollout_{i:04d}.png")
        Image.fromarray((blend.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths
