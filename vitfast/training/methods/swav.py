"""SwAV (Caron et al. 2020), as VISSL trains it: the crops' embeddings are scored against learned
prototypes; each global crop's scores are turned into balanced soft cluster assignments by Sinkhorn-Knopp
(3 iterations, epsilon 0.05, every prototype an equal share of the global batch across ranks), and every
other crop is trained to predict them (softmax at temperature 0.1). Prototypes are renormalised before
each step and frozen in the first epoch; an optional queue of earlier embeddings fills the assignment
when batches are small. Validated by k-NN on the backbone's features, which the run reports."""
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn.functional as F

from ...cli import UsageError
from ...models.ssl_heads import MultiCropNet, SwAVHead, swav_head_dims
from ..config.component import Component, option
from ..config.kinds import AT_LEAST_1, NON_NEGATIVE, POSITIVE
from .self_supervised import SelfSupervised, gathered

__all__ = ["SwAV", "SwAVOptions", "sinkhorn", "swav_loss", "deal_queue"]


@dataclass
class SwAVOptions(Component):
    group = "ssl"

    head_dims: list[int] | None = option(None, "SwAV: VISSL's swav_head dims, the model's width first (default: "
                                               "width,2048,128, the hidden scaled down below 384)", AT_LEAST_1)
    head_use_bn: bool = option(True, "SwAV: BatchNorm between the head's layers (VISSL's use_bn)")
    num_clusters: list[int] = option([3000], "SwAV: prototypes of each set (VISSL's num_clusters; several sets: "
                                             "3000,3000)", AT_LEAST_1)
    swav_temp: float = option(0.1, "SwAV: softmax temperature of the predictions", POSITIVE)
    sinkhorn_epsilon: float = option(0.05, "SwAV: Sinkhorn-Knopp regularisation", POSITIVE)
    sinkhorn_iterations: int = option(3, "SwAV: Sinkhorn-Knopp iterations", AT_LEAST_1)
    crops_for_assign: list[int] = option([0, 1], "SwAV: the crops whose codes the others predict", NON_NEGATIVE)
    queue_length: int = option(0, "SwAV: embeddings queued for the assignment (all ranks; 0: none; SwAV: 3840 for "
                                  "batches under 256)", NON_NEGATIVE)
    queue_start_epoch: float = option(15.0, "SwAV: epoch from which the queue fills", NON_NEGATIVE)
    freeze_prototypes_epochs: float = option(1.0, "SwAV: keep the prototypes fixed for the first N epochs",
                                             NON_NEGATIVE)


@torch.no_grad()
def sinkhorn(scores, epsilon=0.05, iterations=3, distributed=False):
    """(B, K) scores -> (B, K) soft assignments: exp(scores / epsilon) scaled alternately so that each
    prototype holds 1/K of the global batch and each sample sums to 1 (rows of the result)."""
    logits = scores.float() / epsilon
    top = logits.max()
    if distributed:
        tdist.all_reduce(top, op=tdist.ReduceOp.MAX)
    q = torch.exp(logits - top).t()  # (K, B); a shared shift cancels in the normalisations
    k, b = q.shape[0], q.shape[1] * (tdist.get_world_size() if distributed else 1)
    total = q.sum()
    if distributed:
        tdist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            tdist.all_reduce(rows)
        q /= rows * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).t()


def swav_loss(scores, assignments, crops, temperature=0.1):
    """The swapped prediction for one prototype set: for each assigned crop i with codes q_i, the mean over
    the other crops v of -sum q_i log softmax(scores_v / T), averaged over the assigned crops.
    scores: (crops x B, K) rows crop by crop; assignments: {crop index: (B, K) codes}."""
    batch = scores.shape[0] // crops
    log_p = F.log_softmax(scores.float() / temperature, dim=-1).view(crops, batch, -1)
    total = 0.0
    for i, q in assignments.items():
        total = total + sum(-(q * log_p[v]).sum(dim=-1).mean() for v in range(crops) if v != i) / (crops - 1)
    return total / len(assignments)


def deal_queue(queue, world, rank):
    """This rank's queue from a checkpoint's: (crops, length, dim) as one process saved it, or (ranks, crops,
    length, dim), every rank's. Saved at another number of ranks, the entries of all, ordered by age
    (each rank's newest first), are dealt anew, so each rank's queue is still newest first."""
    saved = saved_ranks(queue)
    queue = queue.reshape(saved, *queue.shape[-3:])
    if saved == world:
        return queue[rank]
    by_age = queue.permute(1, 2, 0, 3).reshape(queue.shape[1], -1, queue.shape[-1])
    return by_age[:, rank::world]


def saved_ranks(queue):
    """How many ranks' queues a checkpoint's queue holds."""
    return queue.shape[0] if queue.dim() == 4 else 1


class SwAV(SelfSupervised):
    name = "swav"
    Options = SwAVOptions  # its defaults: DINO's recipe (VISSL's ViT recipes train with AdamW as DINO's)
    default_crops = (2, 4)
    default_sizes = (160 / 224, 96 / 224)
    default_scales = ([0.08, 1.0], [0.05, 0.14])
    solarize, colour = 0.0, (0.8, 0.8, 0.8, 0.2)  # VISSL's ImgPilColorDistortion at strength 1

    @staticmethod
    def blur(total):
        return [0.5] * total  # VISSL's ImgPilGaussianBlur p 0.5 on every crop

    def setup(self, backbone, run):
        opts = self.opts
        dims = opts.head_dims or swav_head_dims(backbone.num_features)
        if dims[0] != backbone.num_features:
            raise UsageError(f"--head-dims {','.join(map(str, dims))}: the first is the input width, "
                             f"{self.cfg['model']}'s {backbone.num_features}")
        self.head = SwAVHead(dims, opts.head_use_bn, opts.num_clusters)
        self.student = MultiCropNet(backbone, self.head).to(run.device)
        self.n_crops = sum(self.crops[0])
        self.assign = opts.crops_for_assign
        if max(self.assign) >= self.n_crops:
            raise UsageError(f"--crops-for-assign {','.join(map(str, self.assign))}: there are {self.n_crops} crops")
        self.freeze_steps = round(opts.freeze_prototypes_epochs * run.steps_per_epoch)
        self.queue_start = round(opts.queue_start_epoch * run.steps_per_epoch)
        length = opts.queue_length // run.dist.world_size if opts.queue_length else 0
        if length % run.data.micro or (opts.queue_length and not length):
            raise UsageError(f"--queue-length {opts.queue_length}: a multiple of the images per rank and step, "
                             f"{run.data.micro} x {run.dist.world_size} rank(s)")
        self.queue = torch.zeros(len(self.assign), length, dims[-1], device=run.device) if length else None
        self.queued = 0  # embeddings in the queue, counted on the host: no device read per step
        if min(opts.num_clusters) <= dims[-1]:  # measured: loss pinned at log K (ssl_knn_cpu.md, run H)
            run.say(f"note: --num-clusters {','.join(map(str, opts.num_clusters))} is not above the embedding's "
                    f"{dims[-1]} dimensions: the embedding can move where every prototype scores it alike and "
                    f"every prediction is uniform (VISSL: 3000 prototypes for 128 dimensions)")
        queue = (f"queue {opts.queue_length} from step {self.queue_start}" if self.queue is not None else "no queue")
        return self.student, (
            f"head {' -> '.join(map(str, dims))}{' (BN)' if opts.head_use_bn else ''}, prototypes "
            f"{','.join(map(str, opts.num_clusters))}; Sinkhorn {opts.sinkhorn_iterations} iterations, epsilon "
            f"{opts.sinkhorn_epsilon:g}, temperature {opts.swav_temp:g}, codes of crops "
            f"{','.join(map(str, self.assign))}; {queue}; prototypes frozen {self.steps(self.freeze_steps)}")

    def loss(self, trained, x, y, step):
        self.head.normalize_prototypes()
        z, scores = trained(x)
        batch = z.shape[0] // self.n_crops
        use_queue = self.queue is not None and step >= self.queue_start and self.queued >= self.queue.shape[1]
        total = 0.0
        for s, prototypes in zip(scores, self.head.prototypes):
            codes = {}
            for j, i in enumerate(self.assign):
                out = s[i * batch:(i + 1) * batch].detach()
                if use_queue:
                    out = torch.cat([self.queue[j] @ prototypes.weight.detach().t(), out])
                codes[i] = sinkhorn(out, self.opts.sinkhorn_epsilon, self.opts.sinkhorn_iterations,
                                    self.run.dist.enabled)[-batch:]
            total = total + swav_loss(s, codes, self.n_crops, self.opts.swav_temp)
        if self.queue is not None and step >= self.queue_start:
            with torch.no_grad():  # newest first; filled for a while before it is used
                for j, i in enumerate(self.assign):
                    self.queue[j] = torch.cat([z[i * batch:(i + 1) * batch].detach(), self.queue[j, :-batch]])
                self.queued += batch
        return total / len(scores)

    def before_step(self, step, optimizer):
        super().before_step(step, optimizer)
        if step < self.freeze_steps:  # SwAV: the prototypes move only after the first epoch
            for p in self.head.prototypes.parameters():
                p.grad = None

    def state(self):
        queue = self.queue
        if queue is not None and self.run.dist.enabled:  # every rank's queue, in rank order
            queue = gathered(queue.cpu().unsqueeze(0))
        return {"ema": None, "ssl": {"method": "swav", "head": self.head.state_dict(), "queued": self.queued,
                                     "queue": None if queue is None else queue.cpu()}}

    def load_state(self, checkpoint):
        ssl = checkpoint.get("ssl") or {}
        if ssl.get("method") != "swav":
            raise ValueError(f"the checkpoint holds no SwAV state (method {ssl.get('method')!r})")
        self.head.load_state_dict(ssl["head"])
        if self.queue is not None and ssl.get("queue") is not None:
            world = self.run.dist.world_size
            self.queue.copy_(deal_queue(ssl["queue"], world, self.run.dist.rank))
            self.queued = ssl.get("queued", 0) * saved_ranks(ssl["queue"]) // world

    @property
    def reported(self):
        return self.model
