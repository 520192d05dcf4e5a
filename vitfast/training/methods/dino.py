"""DINO (Caron et al. 2021): self-distillation without labels. A student (backbone + DINOHead) sees every
crop; a teacher, its exponential moving average, sees the global crops; the student's softmax at
temperature 0.1 is trained towards the teacher's centred, sharpened one. Schedules by optimizer step:
teacher temperature warmed linearly (0.04 -> 0.07), teacher momentum 0.996 -> 1 and weight decay
0.04 -> 0.4 on cosines, the head's last layer frozen in the first epoch. Validated by k-NN on the
teacher backbone's features; the teacher backbone is what the run reports (as an EMA run reports its EMA)."""
import copy
import math

import torch
import torch.nn.functional as F

import vitfast
from ...cli import UsageError
from ...data.multicrop import MultiCrop, plan_crops
from ...models.ssl_heads import DINOHead, MultiCropNet, dino_head_dims
from ..knn import extract_features, knn_accuracy
from .base import Method

__all__ = ["DINO", "dino_loss", "cosine", "patch_of"]


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


def cosine(start, end, step, total):
    """DINO's cosine schedule: start at step 0, end at step total."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def patch_of(cfg):
    """The patch size of the model a config names (built on the meta device: no memory, no random draws)."""
    with torch.device("meta"):
        model = vitfast.create_model(cfg["model"], num_classes=0, **cfg["model_kwargs"],
                                     **({"img_size": cfg["img_size"]} if cfg["img_size"] else {}))
    return getattr(model, "patch_stride", None) if hasattr(model, "set_dynamic_img_size") else None


class DINO(Method):
    name = "dino"

    def __init__(self, cfg):
        self.cfg = cfg

    def train_transform(self, img_size, norm):
        cfg = self.cfg
        self.patch = patch_of(cfg)
        if self.patch is None:
            raise UsageError(f"--ssl dino: {cfg['model']} takes one image size only (no patch embedding to "
                             "resample); use a ViT, DeiT, T2T-ViT or ConViT model")
        try:
            self.crops = plan_crops(img_size, self.patch, cfg["num_crops"], cfg["size_crops"], cfg["crop_scales"])
        except ValueError as e:
            raise UsageError(f"--ssl dino: {e}") from None
        return MultiCrop(*self.crops, norm["mean"], norm["std"], solarize=0.2)

    def prepare(self, model, run):
        cfg = self.cfg
        if not hasattr(model, "set_dynamic_img_size"):
            raise UsageError(f"--ssl dino: {cfg['model']} cannot take crops of several sizes yet; use a ViT, DeiT, "
                             "T2T-ViT or ConViT model")
        model.reset_classifier(0)  # the backbone's features feed the head; saved, it rebuilds without one
        if getattr(model, "create_kwargs", None) is not None:
            model.create_kwargs = dict(model.create_kwargs, num_classes=0)
        model.set_dynamic_img_size()
        hidden, bottleneck, out_dim = dino_head_dims(model.num_features)
        hidden, bottleneck = cfg["head_hidden_dim"] or hidden, cfg["head_bottleneck_dim"] or bottleneck
        out_dim = cfg["head_out_dim"] or out_dim
        head = DINOHead(model.num_features, out_dim, hidden, bottleneck, norm_last_layer=cfg["norm_last_layer"])
        self.run, self.model = run, model
        self.student = MultiCropNet(model, head).to(run.device)
        self.teacher = copy.deepcopy(self.student).eval().requires_grad_(False)
        self.center = torch.zeros(1, out_dim, device=run.device)
        self.n_global = self.crops[0][0]
        warm = cfg["warmup_teacher_temp_epochs"]
        self.temp_warmup = round(warm * run.steps_per_epoch) if warm is not None else run.total_steps // 10
        self.freeze_steps = round(cfg["freeze_last_layer_epochs"] * run.steps_per_epoch)
        n, sizes, scales = self.crops
        run.say(f"--ssl dino: crops {' + '.join(f'{k} x {s} px {lo:g}-{hi:g}' for k, s, (lo, hi) in zip(n, sizes, scales))}"
                f" (patch {self.patch}); head {model.num_features} -> {hidden} -> {hidden} -> {bottleneck} -> "
                f"{out_dim}; teacher temperature {cfg['warmup_teacher_temp']:g} -> {cfg['teacher_temp']:g} over "
                f"{self.temp_warmup} steps, momentum {cfg['teacher_momentum']:g} -> 1, weight decay "
                f"{cfg['weight_decay']:g} -> {cfg['weight_decay_end'] if cfg['weight_decay_end'] is not None else cfg['weight_decay']:g}"
                f"; last layer frozen {self.freeze_steps} steps; k-NN validation (k {cfg['knn_k']}, T {cfg['knn_t']:g})")
        return self.student

    def teacher_temp(self, step):
        cfg = self.cfg
        if step >= self.temp_warmup:
            return cfg["teacher_temp"]
        return cfg["warmup_teacher_temp"] + (cfg["teacher_temp"] - cfg["warmup_teacher_temp"]) * step / self.temp_warmup

    def loss(self, trained, x, y, step):
        student_out = trained(x)
        with torch.no_grad():
            teacher_out = self.teacher(x[:self.n_global])
        loss = dino_loss(student_out, teacher_out, self.center, self.cfg["student_temp"], self.teacher_temp(step),
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
        m = self.cfg["center_momentum"]
        self.center.mul_(m).add_(batch / count, alpha=1 - m)

    def before_step(self, step, optimizer):
        cfg = self.cfg
        if cfg["weight_decay_end"] is not None:
            wd = cosine(cfg["weight_decay"], cfg["weight_decay_end"], step, self.run.total_steps)
            for group in optimizer.param_groups:
                if group.setdefault("decayed", group["weight_decay"] > 0):
                    group["weight_decay"] = wd
        if step < self.freeze_steps:  # DINO: the last layer moves only once the rest has found its feet
            for p in self.student.head.last_layer_parameters():
                p.grad = None

    @torch.no_grad()
    def after_step(self, step):
        m = cosine(self.cfg["teacher_momentum"], 1.0, step, self.run.total_steps)
        teacher = [p for p in self.teacher.parameters()]
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_lerp_(teacher, student, 1 - m)

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

    def validate(self, loader, device, amp_dtype, dist, desc="validation", model=None):
        """Weighted k-NN of the validation images among the training images, on the features of the
        teacher backbone (or `model`)."""
        backbone = self.reported if model is None else model
        bank, bank_labels = extract_features(backbone, self.run.data.bank_loader(), device, amp_dtype,
                                             desc=f"{desc}: k-NN memory bank" if desc else None)
        feats, labels = extract_features(backbone, loader, device, amp_dtype, desc=desc)
        if dist is not None and dist.enabled:
            bank, bank_labels, feats, labels = (gathered(t) for t in (bank, bank_labels, feats, labels))
        acc1, acc5 = knn_accuracy(bank, bank_labels, feats, labels, self.run.num_classes, self.cfg["knn_k"],
                                  self.cfg["knn_t"])
        return {"acc1": acc1, "acc5": acc5, "loss": None, "count": len(labels), "knn": True}


def gathered(tensor):
    """Every rank's rows of a CPU tensor, in rank order (all_gather_object: shards may differ in length)."""
    import torch.distributed as tdist

    parts = [None] * tdist.get_world_size()
    tdist.all_gather_object(parts, tensor)
    return torch.cat(parts)
