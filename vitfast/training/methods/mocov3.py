"""MoCo v3 (Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers"):
contrastive learning with a momentum encoder, built for ViTs. Two crops of each image; the query
encoder (backbone, projector, predictor) of each crop is trained to pick the momentum encoder's key
(backbone, projector) of the other crop out of every image's key in the global batch: InfoNCE at
temperature 0.2, symmetrised, scaled by 2 x T. The momentum encoder follows the query encoder's weights,
momentum 0.99 -> 1 on a cosine; the patch embedding stays at its random initialisation (the paper's
stop_grad_conv1: the remedy for the instability it found in ViTs). Unlike DINO and SwAV, its negatives
spread the features apart from the first step, which is why it learns at small batch and scale.
Validated by k-NN on the query encoder's backbone, which the run reports (as the paper evaluates it)."""
import copy
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from ...cli import UsageError
from ...models.ssl_heads import MultiCropNet, moco_head_dims, moco_mlp
from ..config.component import Component, option
from ..config.flags import show
from ..config.kinds import AT_LEAST_1, FRACTION, POSITIVE
from .self_supervised import SelfSupervised, cosine

__all__ = ["MoCoV3", "MoCoV3Options", "moco_loss", "global_batch"]


@dataclass
class MoCoV3Options(Component):
    group = "ssl"

    # the names are moco-v3's own flags (main_moco.py)
    moco_dim: int | None = option(None, "MoCo v3: output dimension of the projector and predictor (default: "
                                        "256, scaled as DINO's head below a width of 384)", AT_LEAST_1)
    moco_mlp_dim: int | None = option(None, "MoCo v3: hidden width of the projector and predictor (default: "
                                            "4096, scaled as --moco-dim)", AT_LEAST_1)
    moco_m: float = option(0.99, "MoCo v3: momentum of the momentum encoder (raised to 1 on a cosine unless "
                                 "--moco-m-cos false)", FRACTION)
    moco_m_cos: bool = option(True, "MoCo v3: raise --moco-m to 1 on a cosine over the run")
    moco_t: float = option(0.2, "MoCo v3: softmax temperature of the contrastive loss", POSITIVE)
    stop_grad_conv1: bool = option(True, "MoCo v3: keep the patch embedding at its random initialisation "
                                         "(the paper's remedy for training instability)")


def moco_loss(q, k, temperature, rank=0):
    """InfoNCE of this rank's queries q (B, D) against the keys of the global batch k (N, D), whose
    positives are this rank's rows of k (rank x B onwards), scaled by 2 x temperature as MoCo v3's."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return F.cross_entropy(q @ k.t() / temperature, labels) * (2 * temperature)


def global_batch(keys, world_size):
    """Every rank's keys, in rank order (no gradient flows through keys)."""
    if world_size == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(world_size)]
    tdist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class MoCoV3(SelfSupervised):
    name = "mocov3"
    Options = MoCoV3Options
    # moco-v3's ViT-S recipe (its CONFIG.md): AdamW, lr 1.5e-4 x batch / 256, weight decay 0.1, 40 warmup
    # epochs of 300, a cosine to 0, no gradient clipping
    defaults = dict(SelfSupervised.defaults, lr=1.5e-4, weight_decay=0.1, weight_decay_end=None, clip_grad=None,
                    warmup_epochs=40.0, min_lr=0.0, epochs=300)
    default_crops = (2,)
    default_sizes = (1.0,)
    default_scales = ([0.08, 1.0],)  # BYOL's augmentation: DINO's global crops' jitter, blur and solarisation

    def train_transform(self, img_size, norm):
        crops = self.ssl.num_crops
        if crops is not None and list(crops) != [2]:
            raise UsageError(f"--ssl mocov3: --num-crops {show(crops)}: MoCo v3 contrasts two crops of each image, "
                             "--num-crops 2")
        return super().train_transform(img_size, norm)

    def setup(self, backbone, run):
        opts = self.opts
        hidden, dim = moco_head_dims(backbone.num_features)
        hidden, dim = opts.moco_mlp_dim or hidden, opts.moco_dim or dim
        if opts.stop_grad_conv1:
            backbone.patch_embed.requires_grad_(False)
        self.projector = moco_mlp(3, backbone.num_features, hidden, dim)
        self.predictor = moco_mlp(2, dim, hidden, dim)
        self.student = MultiCropNet(backbone, nn.Sequential(self.projector, self.predictor), per_crop=True)
        self.student.to(run.device)
        # the momentum encoder: the backbone and projector, without the predictor; its BatchNorm normalises
        # with the batch's statistics, as the paper's (it is never put in eval mode while training)
        self.teacher = MultiCropNet(copy.deepcopy(backbone), copy.deepcopy(self.projector), per_crop=True)
        self.teacher.requires_grad_(False)
        frozen = "; patch embedding frozen at its random initialisation" if opts.stop_grad_conv1 else ""
        momentum = f"{opts.moco_m:g} -> 1" if opts.moco_m_cos else f"{opts.moco_m:g}"
        return self.student, (
            f"projector {backbone.num_features} -> {hidden} -> {hidden} -> {dim}, predictor {dim} -> {hidden} -> "
            f"{dim} (BN); temperature {opts.moco_t:g}, momentum {momentum}{frozen}")

    def held(self):
        return [self.teacher]

    def loss(self, trained, x, y, step):
        q = trained(x)
        with torch.no_grad():
            k = self.teacher.train()(x)  # batch statistics (validation puts the backbone in eval mode)
        q1, q2 = q.chunk(2)
        k1, k2 = (global_batch(part, self.run.dist.world_size) for part in k.chunk(2))
        rank, t = self.run.dist.rank, self.opts.moco_t
        return moco_loss(q1, k2, t, rank) + moco_loss(q2, k1, t, rank)

    @torch.no_grad()
    def after_step(self, step):
        opts = self.opts
        m = cosine(opts.moco_m, 1.0, step, self.run.total_steps) if opts.moco_m_cos else opts.moco_m
        # the parameters as they are now (--fsdp replaces them with its shards after setup)
        student = [p.detach() for p in (*self.model.parameters(), *self.projector.parameters())]
        torch._foreach_lerp_(list(self.teacher.parameters()), student, 1 - m)

    def diverged(self):
        return "; MoCo v3's remedies: a lower --lr, --stop-grad-conv1 (on by default), a longer --warmup-epochs"

    def state(self):
        return {"ema": None, "ssl": {"method": "mocov3", "head": self.student.head.state_dict(),
                                     "teacher": self.teacher.state_dict()}}

    def load_state(self, checkpoint):
        ssl = checkpoint.get("ssl") or {}
        if ssl.get("method") != "mocov3":
            raise ValueError(f"the checkpoint holds no MoCo v3 state (method {ssl.get('method')!r})")
        self.student.head.load_state_dict(ssl["head"])
        self.teacher.load_state_dict(ssl["teacher"])

    @property
    def reported(self):
        return self.model
