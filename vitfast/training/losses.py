"""Losses: label-smoothed / soft-target cross entropy, DeiT distillation, DVT's summed exits."""
import torch
import torch.nn.functional as F


def classification_loss(logits, target, smoothing=0.0):
    """Cross entropy against class indices (with label smoothing) or soft targets (mixup/cutmix)."""
    if target.dtype.is_floating_point:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def distillation_loss(student_out, teacher_logits, target, kind="hard", alpha=0.5, tau=1.0, smoothing=0.0):
    """DeiT's loss: (1 - alpha) * CE(class head) + alpha * distillation on the distillation head (the
    class head again for a model without one). hard: CE against the teacher's argmax; soft:
    KL(student/tau || teacher/tau) * tau^2."""
    cls_out, dist_out = student_out if isinstance(student_out, tuple) else (student_out, student_out)
    base = classification_loss(cls_out, target, smoothing)
    if kind == "hard":
        kd = F.cross_entropy(dist_out, teacher_logits.argmax(dim=-1))
    else:
        kd = F.kl_div(F.log_softmax(dist_out / tau, dim=-1), F.log_softmax(teacher_logits / tau, dim=-1),
                      reduction="batchmean", log_target=True) * tau * tau
    return (1 - alpha) * base + alpha * kd


def training_loss(output, target, smoothing=0.0):
    """One model output -> loss: DVT's list of exits is the unweighted sum over exits; a distilled
    model's (cls, dist) pair without a teacher averages its two heads' losses."""
    if isinstance(output, list):
        return sum(classification_loss(o, target, smoothing) for o in output)
    if isinstance(output, tuple):
        return sum(classification_loss(o, target, smoothing) for o in output) / len(output)
    return classification_loss(output, target, smoothing)


class NonFiniteWatch:
    """Records on the device the first step whose loss is inf/NaN, so the training loop never waits for
    the GPU to learn it: reading the loss each step would stall the host once per step. check() reads
    the record (one synchronisation); the loop calls it where it syncs anyway (log steps, checkpoints)."""

    def __init__(self, device):
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), dtype=torch.float32, device=device)

    def update(self, loss, step):
        fresh = ~torch.isfinite(loss.detach()) & (self.step < 0)
        self.step = torch.where(fresh, step, self.step)
        self.loss = torch.where(fresh, loss.detach().float(), self.loss)

    def check(self):
        """None, or (step, loss) of the first non-finite loss."""
        step = int(self.step)
        return None if step < 0 else (step, float(self.loss))
