"""The transformer initialisation timm and the official ViT/T2T/ConViT code share."""
from torch import nn


def init_linear_norm(module, std=0.02):
    """Truncated-normal Linear weights (std 0.02) with zero biases, and unit / zero LayerNorm affine
    parameters, for every submodule, in module order."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
