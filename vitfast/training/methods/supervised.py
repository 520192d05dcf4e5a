"""Supervised training (cross entropy against the labels) and DeiT's distillation from a teacher."""
from dataclasses import dataclass

import torch

from ...data import Mixup
from ..config.component import Component, option
from ..config.data import AugmentOptions
from ..config.kinds import POSITIVE, PROBABILITY
from ..config.optimization import PrecisionOptions
from ..ema import ModelEma
from ..evaluate import evaluate
from ..losses import distillation_loss, training_loss
from ..teacher import build_teacher
from .base import Method


class Supervised(Method):
    """Label-smoothed cross entropy (soft targets under mixup / cutmix; DVT's exits summed), with an
    optional EMA of the weights (--ema), which is then what the run validates and reports."""

    name = "supervised"

    def __init__(self, cfg):
        self.cfg, self.augment, self.ema_decay = cfg, AugmentOptions.of(cfg), PrecisionOptions.of(cfg).ema
        self.model = self.ema = self.mixup = None

    def prepare(self, model, run):
        aug = self.augment
        if aug.mixup > 0 or aug.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, label_smoothing=aug.smoothing,
                               num_classes=run.num_classes)
        self.model = model
        self.ema = ModelEma(model, self.ema_decay) if self.ema_decay > 0 else None
        return model

    def held(self):
        return [self.ema.module] if self.ema is not None else []

    def views(self, x, y):
        return self.mixup(x, y) if self.mixup is not None else (x, y)

    def loss(self, trained, x, y, step):
        return training_loss(trained(x), y, self.augment.smoothing)

    def after_step(self, step):
        if self.ema is not None:
            self.ema.update(self.model)

    def state(self):
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state(self, checkpoint):
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.load_state_dict(checkpoint["ema"])

    @property
    def reported(self):
        return self.ema.module if self.ema is not None else self.model

    @property
    def weights(self):
        return "ema" if self.ema is not None else "raw"

    def validate(self, loader, device, amp_dtype, dist, desc="validation", model=None):
        return evaluate(self.reported if model is None else model, loader, device, amp_dtype, dist, desc=desc)


_TEACHER, _NAMED = ("--teacher", lambda c: c["teacher"]), ("--teacher NAME", lambda c: c["teacher"])


@dataclass
class DistillOptions(Component):
    group = "distill"
    needs = _TEACHER

    teacher: str | None = option(None, "torchvision/timm model name (with --teacher-checkpoint), or a vitfast "
                                       "checkpoint or model.safetensors", needs=False)
    teacher_checkpoint: str | None = option(None, "weights for a --teacher given by name", needs=_NAMED)
    teacher_weights: str = option("reported", "which weights of a vitfast run's checkpoint as --teacher: reported "
                                              "(the EMA's where the run kept one), ema, raw",
                                  ("reported", "ema", "raw"))
    teacher_random_init: bool = option(False, "accept a --teacher given by name with random weights (no "
                                              "--teacher-checkpoint): for smoke tests only", needs=_NAMED)
    distill_type: str = option("hard", "hard | soft", ("hard", "soft"))
    distill_alpha: float = option(0.5, "weight of the distillation loss", PROBABILITY)
    distill_tau: float = option(1.0, "soft distillation temperature", POSITIVE)


class Distillation(Supervised):
    """DeiT: the supervised loss mixed with one against a frozen teacher's predictions (--teacher,
    --distill-type hard|soft, --distill-alpha, --distill-tau); the teacher is held, never trained."""

    name = "distillation"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.opts = DistillOptions.of(cfg)

    def prepare(self, model, run):
        model = super().prepare(model, run)
        self.teacher, which = build_teacher(self.cfg, run.num_classes, run.img_size, run.device)
        if which:
            run.say(f"teacher {self.opts.teacher}: {which}")
        return model

    def held(self):
        return super().held() + [self.teacher]

    def loss(self, trained, x, y, step):
        opts = self.opts
        output = trained(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(output, teacher_logits, y, opts.distill_type, opts.distill_alpha, opts.distill_tau,
                                 self.augment.smoothing)
