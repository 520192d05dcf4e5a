"""DINO (Caron et al. 2021): self-distillation without labels. A student (backbone + DINOHead) sees every
crop; a teacher, its exponential moving average, sees the global crops; the student's softmax at
temperature 0.1 is trained towards the teacher's centred, sharpened one. Schedules by optimizer step:
teacher temperature warmed linearly (0.04 -> 0.07), teacher momentum 0.996 -> 1 and weight decay
0.04 -> 0.4 on cosines, the head's last layer frozen in the first epoch. Validated by k-NN on the
teacher backbone's features; the teacher backbone is what the run reports (as an EMA run reports its EMA)."""
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.ssl_heads import DINOHead, MultiCropNet, dino_head_dims
from ..config.component import Component, option
from ..config.kinds import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE
from .self_supervised import SelfSupervised, cosine

__all__ = ["DINO", "DINOOptions", "dino_loss"]


@dataclass
class DINOOptions(Component):
    group = "ssl"

    head_hidden_dim: int | None = option(None, "DINO head's hidden width (default: 2048, scaled down for models "
                                               "narrower than 384)", AT_LEAST_1)
    head_bottleneck_dim: int | None = option(None, "DINO head's bottleneck (default: 256, scaled as the hidden "
                                                   "width)", AT_LEAST_1)
    head_out_dim: int | None = option(None, "DINO head's output dimension (default: 65536, scaled with the square "
                                            "of the model's width below 384)", AT_LEAST_1)
    norm_last_layer: bool = option(True, "DINO: fix the weight norm of the head's last layer")
    freeze_last_layer_epochs: float = option(1.0, "DINO: keep the head's last layer fixed for the first N epochs",
                                             NON_NEGATIVE)
    student_temp: float = option(0.1, "DINO: student softmax temperature", POSITIVE)
    teacher_temp: float = option(0.07, "DINO: teacher temperature after its warmup", POSITIVE)
    warmup_teacher_temp: float = option(0.04, "DINO: teacher temperature at the start", POSITIVE)
    warmup_teacher_temp_epochs: float | None = option(None, "DINO: epochs of linear teacher temperature warmup "
                                                            "(default: 10%% of the run, DINO's 30 of 300)",
                                                      NON_NEGATIVE)
    center_momentum: float = option(0.9, "DINO: momentum of the teacher output's centre", FRACTION)
    teacher_momentum: float = option(0.996, "DINO: teacher EMA momentum at the start, raised to 1 on a cosine",
                                     FRACTION)


def dino_loss(student_out, teacher_out, center, student_temp, teacher_temp, n_global):
    """Cross entropy between the teacher's centred, sharpened softmax of each global crop and the student's
    softmax of every other crop, averaged over those pairs. student_out: (crops x B, K) rows crop by crop;
    teacher_out: (n_global x B, K)."""
    student = F.log_softmax(student_out.float() / student_temp, dim=-1)
    teacher = F.softmax((teacher_out.float() - center) / teacher_temp, dim=-1).detach()
    crops, batch = student_out.shape[0] // (teacher_out.shape[0] // n_global), teacher_out.shape[0] // n_global
    s, t = student.view(crops, batch, -1), teacher.view(n_global, batch, -1)
    total, pairs = 0.0, 0
    for iq in range(n_global):
        for v in range(crops):
            if v != iq:
                total = total + torch.sum(-t[iq] * s[v], dim=-1).mean()
                pairs += 1
    return total / pairs


class DINO(SelfSupervised):
    name = "dino"
    Options = DINOOptions

    def setup(self, backbone, run):
        opts = self.opts
        hidden, bottleneck, out_dim = dino_head_dims(backbone.num_features)
        hidden, bottleneck = opts.head_hidden_dim or hidden, opts.head_bottleneck_dim or bottleneck
        out_dim = opts.head_out_dim or out_dim
        head = DINOHead(backbone.num_features, out_dim, hidden, bottleneck, norm_last_layer=opts.norm_last_layer)
        self.student = MultiCropNet(backbone, head).to(run.device)
        self.teacher = copy.deepcopy(self.student).eval().requires_grad_(False)
        self.center = torch.zeros(1, out_dim, device=run.device)
        self.n_global = self.crops[0][0]
        warm = opts.warmup_teacher_temp_epochs
        self.temp_warmup = round(warm * run.steps_per_epoch) if warm is not None else run.total_steps // 10
        self.freeze_steps = round(opts.freeze_last_layer_epochs * run.steps_per_epoch)
        return self.student, (
            f"head {backbone.num_features} -> {hidden} -> {hidden} -> {bottleneck} -> {out_dim}; teacher temperature "
            f"{opts.warmup_teacher_temp:g} -> {opts.teacher_temp:g} over {self.steps(self.temp_warmup)}, "
            f"momentum {opts.teacher_momentum:g} -> 1; last layer frozen {self.steps(self.freeze_steps)}")

    def held(self):
        return [self.teacher]

    def teacher_temp(self, step):
        opts = self.opts
        if step >= self.temp_warmup:
            return opts.teacher_temp
        return opts.warmup_teacher_temp + (opts.teacher_temp - opts.warmup_teacher_temp) * step / self.temp_warmup

    def loss(self, trained, x, y, step):
        student_out = trained(x)
        with torch.no_grad():
            teacher_out = self.teacher(x[:self.n_global])
        loss = dino_loss(student_out, teacher_out, self.center, self.opts.student_temp, self.teacher_temp(step),
                         self.n_global)
        self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out):
        """centre <- m centre + (1 - m) mean of the teacher's outputs over the global batch (all ranks)."""
        batch = teacher_out.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=batch.device)
        dist = self.run.dist
        if dist.enabled:
            batch, count = dist.all_reduce_sum(batch), dist.all_reduce_sum(count)
        m = self.opts.center_momentum
        self.center.mul_(m).add_(batch / count, alpha=1 - m)

    def before_step(self, step, optimizer):
        super().before_step(step, optimizer)
        if step < self.freeze_steps:  # DINO: the last layer moves only once the rest has found its feet
            for p in self.student.head.last_layer_parameters():
                p.grad = None

    @torch.no_grad()
    def after_step(self, step):
        m = cosine(self.opts.teacher_momentum, 1.0, step, self.run.total_steps)
        teacher = [p for p in self.teacher.parameters()]
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_lerp_(teacher, student, 1 - m)

    def diverged(self):
        if self.cfg["amp"] == "fp16":  # the head and loss already run in fp32: the backbone's range is left
            return ("; DINO is known to diverge in fp16 (facebookresearch/dino #58, #104): --amp bf16 keeps fp32's "
                    "range, or lower --lr and --clip-grad")
        return "; DINO's remedies: a lower --lr, a smaller --clip-grad, a longer --freeze-last-layer-epochs"

    def state(self):
        return {"ema": self.teacher.backbone.state_dict(),
                "ssl": {"method": "dino", "student_head": self.student.head.state_dict(),
                        "teacher_head": self.teacher.head.state_dict(), "center": self.center.cpu()}}

    def load_state(self, checkpoint):
        ssl = checkpoint.get("ssl") or {}
        if ssl.get("method") != "dino":
            raise ValueError(f"the checkpoint holds no DINO state (method {ssl.get('method')!r})")
        self.teacher.backbone.load_state_dict(checkpoint["ema"])
        self.student.head.load_state_dict(ssl["student_head"])
        self.teacher.head.load_state_dict(ssl["teacher_head"])
        self.center.copy_(ssl["center"])

    @property
    def reported(self):
        return self.teacher.backbone

    @property
    def weights(self):
        return "ema"
