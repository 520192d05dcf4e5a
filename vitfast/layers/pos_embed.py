"""Position embeddings: resampling a learned grid to a new image size, and the fixed sinusoidal table."""
import math

import torch
import torch.nn.functional as F


def resample_abs_pos_embed(pos_embed, new_grid, num_prefix_tokens=1, old_grid=None):
    """(1, prefix + H*W, C) -> (1, prefix + H'*W', C), bicubic on the grid; prefix tokens kept."""
    new_grid = tuple(new_grid)
    n = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(math.isqrt(n))
        if side * side != n:
            raise ValueError(f"cannot infer the grid of a position embedding with {n} patch positions")
        old_grid = (side, side)
    if tuple(old_grid) == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2).float()
    # antialias=True: the PIL-style bicubic timm uses, so resized checkpoints match timm exactly.
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def sinusoid_table(n_position, dim):
    """The fixed (1, n_position, dim) table of "Attention is all you need" (T2T-ViT's position code)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)
