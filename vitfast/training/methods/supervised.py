"""Supervised training (cross entropy against the labels) and DeiT's distillation from a teacher."""
import torch

from ...data import Mixup
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
        self.cfg = cfg
        self.model = self.ema = self.mixup = None

    def prepare(self, model, run):
        cfg = self.cfg
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            self.mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], label_smoothing=cfg["smoothing"],
                               num_classes=run.num_classes)
        self.model = model
        self.ema = ModelEma(model, cfg["ema"]) if cfg["ema"] > 0 else None
        return model

    def held(self):
        return [self.ema.module] if self.ema is not None else []

    def views(self, x, y):
        return self.mixup(x, y) if self.mixup is not None else (x, y)

    def loss(self, trained, x, y, step):
        return training_loss(trained(x), y, self.cfg["smoothing"])

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


class Distillation(Supervised):
    """DeiT: the supervised loss mixed with one against a frozen teacher's predictions (--teacher,
    --distill-type hard|soft, --distill-alpha, --distill-tau); the teacher is held, never trained."""

    name = "distillation"

    def prepare(self, model, run):
        model = super().prepare(model, run)
        self.teacher, which = build_teacher(self.cfg, run.num_classes, run.img_size, run.device)
        if which:
            run.say(f"teacher {self.cfg['teacher']}: {which}")
        return model

    def held(self):
        return super().held() + [self.teacher]

    def loss(self, trained, x, y, step):
        cfg = self.cfg
        output = trained(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(output, teacher_logits, y, cfg["distill_type"], cfg["distill_alpha"],
                                 cfg["distill_tau"], cfg["smoothing"])
