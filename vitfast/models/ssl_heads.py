"""Self-supervised heads and the multi-crop network: DINO's projection head (an MLP, L2 normalisation,
a weight-normalised last layer), VISSL's swav_head (an MLP and prototypes), and a backbone + head that
runs each resolution group of crops in one forward (DINO's MultiCropWrapper; VISSL's multi-crop trunk)."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "SwAVHead", "MultiCropNet", "dino_head_dims", "swav_head_dims", "moco_head_dims", "moco_mlp",
           "features"]


def dino_head_dims(embed_dim):
    """(hidden, bottleneck, out_dim) of DINO's head for a backbone of this width: DINO's 2048 / 256 /
    65,536 at ViT-S's 384 and above; narrower backbones get a head scaled with them (powers of two; out_dim
    with the square of the width), so a 96-wide model's head is not fifty times the model."""
    r = min(1.0, embed_dim / 384)

    def pow2(x, lo):
        return max(lo, 1 << max(0, round(x).bit_length() - 1))

    return pow2(2048 * r, 64), pow2(256 * r, 32), pow2(65536 * r * r, 256)


class DINOHead(nn.Module):
    """in_dim -> hidden (GELU) -> hidden (GELU) -> bottleneck, L2-normalised, -> out_dim through a
    weight-normalised linear layer without bias (weight = g * v / ||v|| per output row). norm_last_layer
    fixes g at 1 (DINO's default for ViT: training is more stable)."""

    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256, nlayers=3, norm_last_layer=True):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        v = torch.empty(out_dim, bottleneck_dim)
        nn.init.trunc_normal_(v, std=0.02)
        self.last_v = nn.Parameter(v)
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)
        self.norm_last_layer = norm_last_layer

    def last_layer_parameters(self):
        return [p for p in (self.last_v, self.last_g) if p.requires_grad]

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1)
        weight = self.last_g * F.normalize(self.last_v, dim=-1)
        return F.linear(x, weight)


def features(backbone, x):
    """The backbone's pooled image features (the class token after the final norm, or the pooled tokens):
    what a head, k-NN and a linear probe take."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


class MultiCropNet(nn.Module):
    """backbone + head over a list of crops: consecutive crops of one size are concatenated and run
    through the backbone together (one forward per resolution group), the head runs once on all the
    features, in fp32 under autocast: its L2 normalisation, weight-normalised layer and the losses'
    sharp softmaxes are where fp16 overflows (DINO's fp16 NaNs, facebookresearch/dino #58, #104), and it
    costs ~1% of a ViT-S step. Output rows: crop 0's batch, then crop 1's, ... per_crop: the head runs on
    each crop's batch alone, so that its BatchNorm normalises over one view (MoCo v3 runs its encoders
    once per view)."""

    def __init__(self, backbone, head, per_crop=False):
        super().__init__()
        self.backbone, self.head, self.per_crop = backbone, head, per_crop

    def forward(self, crops):
        if torch.is_tensor(crops):
            crops = [crops]
        feats, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(features(self.backbone, torch.cat(crops[start:end])))
            start = end
        feats = torch.cat(feats)
        with torch.autocast(feats.device.type, enabled=False):
            if self.per_crop:
                return torch.cat([self.head(f) for f in feats.float().chunk(len(crops))])
            return self.head(feats.float())


def swav_head_dims(embed_dim):
    """VISSL's swav_head dims for a backbone of this width: SwAV's 2-layer MLP (hidden 2048, output 128),
    the hidden width scaled down with backbones narrower than 384 (as DINO's head)."""
    return [embed_dim, dino_head_dims(embed_dim)[0], 128]


class SwAVHead(nn.Module):
    """VISSL's swav_head: an MLP over `dims` (Linear, BatchNorm1d when use_bn, ReLU between layers), the
    embedding L2-normalised, then one bias-free linear layer of prototypes per entry of num_clusters.
    forward -> (embedding (N, dims[-1]), [scores (N, K) for each prototype set])."""

    def __init__(self, dims, use_bn=True, num_clusters=(3000,)):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"dims needs the input width and at least one layer's, got {list(dims)}")
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [nn.BatchNorm1d(b)] if use_bn else []
                layers.append(nn.ReLU(inplace=True))
        self.projection = nn.Sequential(*layers)
        self.prototypes = nn.ModuleList(nn.Linear(dims[-1], k, bias=False) for k in num_clusters)

    @torch.no_grad()
    def normalize_prototypes(self):
        """SwAV keeps each prototype on the unit sphere: renormalised before every step."""
        for p in self.prototypes:
            p.weight.copy_(F.normalize(p.weight, dim=1))

    def forward(self, x):
        z = F.normalize(self.projection(x), dim=-1)
        return z, [p(z) for p in self.prototypes]


def moco_head_dims(embed_dim):
    """(hidden, out) of MoCo v3's projector and predictor: 4096 / 256 at ViT-S's 384 and above, scaled
    down with narrower backbones as DINO's head is."""
    hidden, bottleneck, _ = dino_head_dims(embed_dim)
    return 2 * hidden, bottleneck


def moco_mlp(layers, in_dim, hidden, out_dim):
    """MoCo v3's MLP for ViTs: bias-free linear layers with BatchNorm and ReLU between them, and a
    BatchNorm without affine parameters after the last, as SimCLR's projector (moco-v3's ViT projector
    and predictor both end so)."""
    mods = []
    for i in range(layers):
        a, b = in_dim if i == 0 else hidden, out_dim if i == layers - 1 else hidden
        mods.append(nn.Linear(a, b, bias=False))
        mods += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)] if i < layers - 1 else [nn.BatchNorm1d(b, affine=False)]
    return nn.Sequential(*mods)
