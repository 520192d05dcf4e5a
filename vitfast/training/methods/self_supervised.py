"""What every self-supervised method shares: multi-crop views of each image, a backbone without its
classifier that takes crops of several sizes, weight decay on a cosine, and k-NN validation of the
backbone's features against the training split (labels are read only there)."""
import math
import os
import shlex
from dataclasses import dataclass

import torch

import vitfast
from ...cli import UsageError, plural
from ...data.multicrop import MultiCrop, plan_crops
from ..config.component import Component, option
from ..config.files import recorded
from ..config.flags import as_flags, flag_of, show
from ..config.kinds import AT_LEAST_1, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..config.model import creation_kwargs
from ..knn import extract_features, knn_accuracy
from ..rundir import last_checkpoint
from .base import Method
from .registry import SSL_METHODS

__all__ = ["SelfSupervised", "SSLOptions", "cosine", "patch_of", "gathered"]

FAMILIES = "a ViT, DeiT, T2T-ViT, ConViT or DVT model"


def cosine(start, end, step, total):
    """DINO's cosine schedule: start at step 0, end at step total."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def patch_of(cfg):
    """(patch stride, smallest crop side) of the model a config names, (None, None) when it takes one
    image size only (built on the meta device: no memory, no random draws). The smallest side is a
    patch but for DVT, whose coarsest stage needs more (min_img_size)."""
    with torch.device("meta"):
        model = vitfast.create_model(cfg["model"], num_classes=0, **creation_kwargs(cfg))
    patch = getattr(model, "patch_stride", None) if hasattr(model, "set_dynamic_img_size") else None
    return patch, model.min_img_size() if patch and hasattr(model, "min_img_size") else patch


def gathered(tensor):
    """Every rank's rows of a CPU tensor, in rank order (all_gather_object: shards may differ in length)."""
    import torch.distributed as tdist

    parts = [None] * tdist.get_world_size()
    tdist.all_gather_object(parts, tensor)
    return torch.cat(parts)


def _any_method():
    return f"--ssl {' or '.join(SSL_METHODS)}"


# Options that act on labels: a self-supervised run has none to act on.
_LABELS_ONLY = {"mixup": "mixup", "cutmix": "cutmix", "smoothing": "label smoothing", "teacher": "distillation",
                "repeated_aug": "repeated augmentation", "aa": "RandAugment (multi-crop has its own augmentation)",
                "color_jitter": "--color-jitter (multi-crop jitters every crop)", "reprob": "random erasing",
                "ema": "--ema (DINO's teacher and MoCo v3's momentum encoder are EMAs already; SwAV keeps none)"}


@dataclass
class SSLOptions(Component):
    """What every self-supervised method reads: the method, its multi-crop views, the weight decay's
    cosine and the k-NN validation."""

    group = "ssl"
    needs = (_any_method, lambda c: c["ssl"])

    ssl: str | None = option(None, "self-supervised pretraining instead of supervised: {choices} (no labels used; "
                                   "validated by k-NN on the training split)", SSL_METHODS, needs=False)
    num_crops: list[int] | None = option(None, "crops per image in each group, global first (VISSL's num_crops; "
                                               "DINO: 2,8; SwAV: 2,4)", AT_LEAST_1)
    size_crops: list[int] | None = option(None, "crop size of each group in px (VISSL's size_crops; default: DINO's "
                                                "224,96 / SwAV's 160,96 as fractions of 224 of the image size, in "
                                                "whole patches)", AT_LEAST_1)
    crop_scales: list[list[float]] | None = option(None, "area range of each group, lo,hi,lo,hi (VISSL's "
                                                         "crop_scales; DINO: 0.4,1,0.05,0.4; SwAV: "
                                                         "0.08,1,0.05,0.14)")
    crop_color_jitter: list[float] | None = option(None, "brightness,contrast,saturation,hue of the crops' colour "
                                                         "jitter, applied with p 0.8 (DINO: 0.4,0.4,0.2,0.1; SwAV: "
                                                         "0.8,0.8,0.8,0.2)", NON_NEGATIVE)
    crop_grayscale: float = option(0.2, "probability that a crop is made grayscale (DINO, SwAV: 0.2)", PROBABILITY)
    total_num_crops: int | None = option(None, "VISSL's total_num_crops: checked against --num-crops", AT_LEAST_1)
    weight_decay_end: float | None = option(None, "weight decay at the end of a cosine from --weight-decay (DINO: "
                                                  "0.04 -> 0.4; default: constant)", NON_NEGATIVE, needs=False)
    knn_k: int = option(20, "k-NN validation of --ssl runs: neighbours", AT_LEAST_1)
    knn_t: float = option(0.07, "k-NN validation of --ssl runs: temperature of the votes", POSITIVE)

    def check(self, config, where):
        if not self.ssl:
            return
        for key, what in _LABELS_ONLY.items():
            if config[key]:  # all off by default under --ssl (the methods' defaults turn smoothing off)
                raise UsageError(f"{where(key)}: {what} is for supervised training; --ssl {self.ssl} trains without "
                                 "labels: remove it")
        crops = self.num_crops or list(SSL_METHODS[self.ssl].default_crops)
        told = f"{where('num_crops')} {show(crops)}" if self.num_crops else \
            f"--num-crops {show(crops)}, --ssl {self.ssl}'s default"
        for key in ("size_crops", "crop_scales"):  # the user's values only, said as given
            value = getattr(self, key)
            if value is not None and len(value) != len(crops):
                raise UsageError(f"{where(key)} {show(value)}: one entry per crop group, and there are "
                                 f"{len(crops)} ({told})")
            if value is None and len(crops) > 2:  # the defaults describe a global group and a local one
                raise UsageError(f"{told}: {plural(len(crops), 'crop group')}; the default {flag_of(key)} has one "
                                 f"entry for the global crops and one for the local: give {flag_of(key)}")
        jitter = self.crop_color_jitter
        if jitter is not None and (len(jitter) != 4 or jitter[3] > 0.5):
            raise UsageError(f"{where('crop_color_jitter')} {','.join(f'{v:g}' for v in jitter)}: four strengths, "
                             "brightness,contrast,saturation,hue, the hue at most 0.5")
        if self.total_num_crops is not None and sum(crops) != self.total_num_crops:
            raise UsageError(f"{where('total_num_crops')} {self.total_num_crops} is not the sum of {told}")


class SelfSupervised(Method):
    """Subclasses set `name`, their options' dataclass (`Options`, read as self.opts), their own defaults
    (`defaults`, the layer over the model's), crop defaults (`default_sizes`: global and local size as
    fractions of the image, `default_scales`, `solarize`, `colour`, `blur`), and build their modules in
    setup(backbone, run)."""

    Options = None
    # DINO's recipe for ViT-S/16 (main_dino.py and its README), under config files and flags
    # no post-training table unless asked: each format would extract the k-NN memory bank's features again
    defaults = dict(lr=5e-4, lr_base_size=256, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
                    warmup_epochs=10.0, min_lr=1e-6, smoothing=0.0, epochs=100, ptq_report=[])
    default_sizes = (1.0, 96 / 224)
    default_scales = ([0.4, 1.0], [0.05, 0.4])
    default_crops = (2, 8)
    solarize, colour, blur = 0.2, (0.4, 0.4, 0.2, 0.1), None
    scored = "k-NN top-1"

    def __init__(self, cfg):
        self.cfg, self.ssl = cfg, SSLOptions.of(cfg)
        self.opts = self.Options.of(cfg) if self.Options is not None else None

    def train_transform(self, img_size, norm):
        cfg = self.cfg
        self.patch, smallest = patch_of(cfg)
        if self.patch is None:
            raise UsageError(f"--ssl {self.name}: {cfg['model']} takes one image size only (no patch embedding to "
                             f"resample); use {FAMILIES}")
        try:
            self.crops = plan_crops(img_size, self.patch, self.ssl.num_crops, self.ssl.size_crops, self.ssl.crop_scales,
                                    self.default_crops, self.default_sizes, self.default_scales)
        except ValueError as e:
            raise UsageError(f"--ssl {self.name}: {e}") from None
        if min(self.crops[1]) < smallest:
            raise UsageError(f"--ssl {self.name}: size_crops {self.crops[1]}: {cfg['model']} takes crops of at least "
                             f"{smallest} px")
        blur = self.blur(sum(self.crops[0])) if self.blur else None
        return MultiCrop(*self.crops, norm["mean"], norm["std"], solarize=self.solarize, colour=self.jitter(),
                         grayscale=self.ssl.crop_grayscale, blur=blur)

    def jitter(self):
        """The crops' colour jitter strengths: --crop-color-jitter, else the method's own."""
        return tuple(self.ssl.crop_color_jitter or self.colour)

    def prepare(self, model, run):
        if not hasattr(model, "set_dynamic_img_size"):
            raise UsageError(f"--ssl {self.name}: {self.cfg['model']} cannot take crops of several sizes yet; use "
                             f"{FAMILIES}")
        model.reset_classifier(0)  # the backbone's features feed the head; saved, it rebuilds without one
        if getattr(model, "create_kwargs", None) is not None:
            model.create_kwargs = dict(model.create_kwargs, num_classes=0)
        model.set_dynamic_img_size()
        self.run, self.model = run, model
        trained, summary = self.setup(model, run)
        n, sizes, scales = self.crops
        crops = " + ".join(f"{k} x {s} px {lo:g}-{hi:g}" for k, s, (lo, hi) in zip(n, sizes, scales))
        cfg, ssl = self.cfg, self.ssl
        wd = f"{cfg['weight_decay']:g}" + (f" -> {ssl.weight_decay_end:g}" if ssl.weight_decay_end is not None
                                           else "")
        colour = ",".join(f"{v:g}" for v in self.jitter())
        run.say(f"--ssl {self.name}: crops {crops} (patch {self.patch}), colour jitter {colour}, grayscale "
                f"{ssl.crop_grayscale:g}; {summary}; weight decay {wd}; k-NN validation (k {ssl.knn_k}, T "
                f"{ssl.knn_t:g})")
        if hasattr(model, "num_exits"):
            run.say(f"--ssl {self.name}: {cfg['model']}'s features are its last exit's class token; every crop runs "
                    "the whole cascade, the later stages reusing the earlier ones' features and relations at the "
                    "crop's grids (fine-tuning trains every exit)")
        return trained

    def steps(self, n):
        """n steps as the header says them, with a warning where they outlast the run."""
        total = self.run.total_steps
        return plural(n, "step") + (f" (all of the run's {total}: its schedule is cut short)" if n >= total > 0 else "")

    def setup(self, backbone, run):
        """(the module the optimizer trains, what the header says of the method's own settings)."""
        raise NotImplementedError

    def before_step(self, step, optimizer):
        if self.ssl.weight_decay_end is not None:
            wd = cosine(self.cfg["weight_decay"], self.ssl.weight_decay_end, step, self.run.total_steps)
            for group in optimizer.param_groups:
                if group.setdefault("decayed", group["weight_decay"] > 0):
                    group["weight_decay"] = wd

    def next_steps(self, out):
        weights = os.path.join(out, "model.safetensors")
        last = last_checkpoint(out) or os.path.join(out, "checkpoint-last.pt")  # .pt, or an --fsdp run's .dcp
        same = shlex.join(as_flags(recorded(self.cfg), ("model", "model_kwargs", "data", "holdout")))
        return [("evaluate", f"python -m vitfast.eval --checkpoint {weights} --knn --quant fp32,bf16"),
                ("probe", f"python -m vitfast.eval --checkpoint {weights} --linear-probe --probe-lr sweep"),
                ("fine-tune", f"python -m vitfast.train --init-checkpoint {last} {same} --output NEW_FOLDER")]

    def validate(self, loader, device, amp_dtype, dist, desc="validation", model=None):
        """Weighted k-NN of the validation images among the training images, on the features of the
        reported backbone (or `model`)."""
        backbone = self.reported if model is None else model
        bank, bank_labels = extract_features(backbone, self.run.data.bank_loader(), device, amp_dtype,
                                             desc=f"{desc}: k-NN memory bank" if desc else None)
        feats, labels = extract_features(backbone, loader, device, amp_dtype, desc=desc)
        if dist is not None and dist.enabled:
            bank, bank_labels, feats, labels = (gathered(t) for t in (bank, bank_labels, feats, labels))
        acc1, acc5 = knn_accuracy(bank, bank_labels, feats, labels, self.run.num_classes, self.ssl.knn_k,
                                  self.ssl.knn_t)
        return {"acc1": acc1, "acc5": acc5, "loss": None, "count": len(labels), "knn": True}
