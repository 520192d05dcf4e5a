"""Image to patch tokens (timm's PatchEmbed: proj, norm), with input checks that name what was expected."""
from torch import nn


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def check_image(x, in_chans, img_size=None, multiple_of=None, who="model"):
    """ValueError, before any layer runs, for an input the model cannot take."""
    if x.ndim != 4:
        raise ValueError(f"{who} expects images as a (batch, {in_chans}, height, width) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{who} expects {in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if img_size is not None and tuple(x.shape[-2:]) != tuple(img_size):
        raise ValueError(f"{who} expects {img_size[0]}x{img_size[1]} images, got {x.shape[-2]}x{x.shape[-1]}; "
                         f"create it with img_size={x.shape[-2]} to take this size")
    if multiple_of is not None and (x.shape[-2] % multiple_of[0] or x.shape[-1] % multiple_of[1]):
        raise ValueError(f"{who} needs image sides divisible by the patch size {multiple_of}, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm_layer=None, flatten=True,
                 bias=True):
        super().__init__()
        self.img_size, self.patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")
        self.in_chans = in_chans
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        self.strict_img_size = True  # False: any size divisible by the patch (multi-crop; the model resamples)

    def grid_of(self, x):
        """The (rows, columns) of patches an image batch x makes."""
        return x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]

    def forward(self, x):
        if self.strict_img_size:
            check_image(x, self.in_chans, self.img_size, who=type(self).__name__)
        else:
            check_image(x, self.in_chans, multiple_of=self.patch_size, who=type(self).__name__)
        x = self.proj(x)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        return self.norm(x)
