"""Evaluation: top-1/top-5 accuracy (per exit for multi-exit models such as DVT), loss and images/s."""
import itertools
import time

import torch
import torch.nn.functional as F

from .. import progress


def final_logits(output):
    """The prediction of a model output: the last exit of a list, the mean of a (cls, dist) pair."""
    if isinstance(output, list):
        return output[-1]
    if isinstance(output, tuple):
        return (output[0] + output[1]) / 2
    return output


def _batches(loader, max_batches, desc):
    """The loader's first max_batches batches (all: None), shown as a progress bar named desc (None:
    none). Cut with islice rather than a break, so a bar ends at its full count and closes."""
    try:
        total = len(loader)
    except TypeError:  # a loader over an iterable dataset has no length
        total = None
    if max_batches is not None:
        loader = itertools.islice(loader, max_batches)
        total = max_batches if total is None else min(total, max_batches)
    return loader if desc is None else progress.bar(loader, total=total, desc=desc, unit="batch", announce=True)


@torch.no_grad()
def collect_logits(model, loader, device, amp_dtype=None, max_batches=None, desc=None):
    """Run the model over a loader: (list of per-exit logits tensors on CPU, labels, images/s), without the
    images a dataset could not read (label -1).
    desc: show the pass as a progress bar of that name (vitfast.progress; a start line off a terminal)."""
    model.eval()
    outs, labels, n, start = [], [], 0, time.perf_counter()
    batches = _batches(loader, max_batches, desc)
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x)
            exits = out if isinstance(out, list) else [final_logits(out)]
            outs.append([e.float().cpu() for e in exits])
            labels.append(y.cpu())
            n += x.shape[0]
    finally:
        if desc is not None:  # an error mid-pass: take the bar off the terminal before its message prints
            batches.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if not outs:
        raise ValueError("the evaluation split is empty")
    exits, labels = [torch.cat([o[j] for o in outs]) for j in range(len(outs[0]))], torch.cat(labels)
    readable = labels >= 0  # an unreadable image's place holder (label -1) counts for nothing
    if not readable.all():
        exits, labels = [e[readable] for e in exits], labels[readable]
    return exits, labels, n / max(seconds, 1e-9)


def accuracy(logits, labels, topk=(1, 5)):
    k = min(max(topk), logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    hits = top == labels[:, None]
    return [100.0 * hits[:, :min(t, k)].any(dim=-1).float().mean().item() for t in topk]


def evaluate(model, loader, device, amp_dtype=None, dist=None, desc=None):
    """{"acc1", "acc5", "loss", "images_per_second", "count"} (+ "exit_acc1": [...] for several exits),
    summed over ranks when distributed. desc: a progress bar's name, as for collect_logits."""
    exits, labels, ips = collect_logits(model, loader, device, amp_dtype, desc=desc)
    stats = torch.tensor([[*(accuracy(e, labels)), F.cross_entropy(e, labels).item()] for e in exits],
                         dtype=torch.float64) * len(labels)
    count = torch.tensor(float(len(labels)), dtype=torch.float64)
    if dist is not None and dist.enabled:
        stats, count = dist.all_reduce_sum(stats.to(dist.device)).cpu(), dist.all_reduce_sum(count.to(dist.device)).cpu()
    stats = (stats / count).tolist()
    result = {"acc1": stats[-1][0], "acc5": stats[-1][1], "loss": stats[-1][2], "images_per_second": ips,
              "count": int(count.item())}
    if len(exits) > 1:
        result["exit_acc1"] = [s[0] for s in stats]
        result["exit_acc5"] = [s[1] for s in stats]
    return result
