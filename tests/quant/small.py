"""The quantization tests' small ViT and inputs, shared by their files and the trained-model fixture."""
import torch

import vitfast

KW = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_classes=10)


def images(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def small_model(seed=0, name="vit_tiny_patch16_224", **kw):
    torch.manual_seed(seed)
    return vitfast.create_model(name, **{**KW, **kw}).eval()
