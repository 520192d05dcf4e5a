"""The output directory of a training run. A run never destroys another: a directory that holds a run
is refused unless --resume continues it or --overwrite starts it over (saying so), and a run that fails
before its first optimizer step leaves no directory it created behind. --resume auto, the command a
scheduler repeats after a preemption, starts over a run that was killed before its first checkpoint
(there is nothing of it to continue) rather than refusing it, which would stop every later requeue."""
import datetime
import glob
import os
import shutil

import torch

from ..cli import UsageError

__all__ = ["RUN_FILES", "run_files", "last_checkpoint", "plan_output", "open_output", "discard_failed_start"]

# checkpoint-*.dcp: a sharded run's checkpoint folders (--fsdp); .tmp and .old: one's write cut short
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoint-last.pt", "checkpoint-best.pt",
             "checkpoint-last.dcp", "checkpoint-best.dcp", "model.safetensors")
CHECKPOINT_KINDS = (".pt", ".dcp")


def run_files(out):
    """The files (and folders) of a run in `out`: what --overwrite deletes."""
    if not os.path.isdir(out):
        return []
    names = set(os.listdir(out))
    found = [n for n in RUN_FILES if n in names]
    found += sorted(n for n in names if n.startswith("checkpoint-step") and n.endswith(CHECKPOINT_KINDS))
    found += sorted(n for n in names if n.startswith("checkpoint-") and n.endswith((".dcp.tmp", ".dcp.old")))
    found += sorted(n for n in names if n.startswith("events.out.tfevents."))
    return found + (["wandb"] if "wandb" in names and found else [])


def last_checkpoint(out):
    """The run's checkpoint-last to continue from (None: none): checkpoint-last.pt, or the sharded
    checkpoint-last.dcp of an --fsdp run; where a run switched between them, the newer."""
    from .sharded_checkpoint import settled

    found = [settled(os.path.join(out, f"checkpoint-last{kind}")) for kind in CHECKPOINT_KINDS]
    found = [p for p in found if os.path.exists(p)]
    if not found:
        return None
    return max(found, key=os.path.getmtime).removesuffix(".old")


def _default_output(model):
    """runs/<date-time>-<model>, with a suffix when that name is taken (two runs in the same second)."""
    base = os.path.join("runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{model}")
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def _decide(cfg):
    """(output directory, checkpoint to resume or None, how a run there is replaced: None, "--overwrite" or
    "--resume auto"), or a UsageError saying why not."""
    out, resume = cfg["output"], cfg["resume"]
    if out is None and resume == "auto":
        runs = sorted(d for d in glob.glob(os.path.join("runs", f"*-{cfg['model']}")) if last_checkpoint(d))
        out = runs[-1] if runs else None
    if out is None:
        out = _default_output(cfg["model"])
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--output {out}: a file is there, not a directory")
    existing, last = run_files(out), last_checkpoint(out)
    replace = "--overwrite" if existing and cfg["overwrite"] else None
    if resume == "auto":
        if existing and last is None:
            if {"summary.json", "model.safetensors"} & set(existing):  # its outputs: a run that ended
                raise UsageError(f"--resume auto: {out} holds a run ({', '.join(existing)}) but no checkpoint-last.pt, "
                                 "so nothing to continue; --overwrite starts it over")
            replace = "--resume auto"  # killed before its first checkpoint
        return out, last, replace
    if resume is not None:
        inside = os.path.abspath(os.path.dirname(resume)) == os.path.abspath(out)
        if existing and not inside:
            raise UsageError(f"--output {out} holds another run ({', '.join(existing)}); continuing {resume} there "
                             "would overwrite it: choose a new --output")
        return out, resume, None
    if existing and not cfg["overwrite"]:
        raise UsageError(f"--output {out} already holds a run ({', '.join(existing)}): continue it with --resume auto, "
                         "start over with --overwrite, or choose another --output")
    return out, None, replace


def plan_output(cfg, dist):
    """Rank 0 decides (output, resume path, replace: _decide's); every rank gets the same answer, or the same
    error."""
    plan, error = None, None
    if dist.is_main:
        try:
            plan = _decide(cfg)
        except UsageError as e:
            error = str(e)
    if dist.enabled:
        shared = [plan, error]
        torch.distributed.broadcast_object_list(shared, src=0)
        plan, error = shared
    if error:
        raise UsageError(error)
    return plan


def _delete_run(out):
    existing = run_files(out)
    for name in existing:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return existing


def open_output(out, replace, log_print):
    """Create the directory (rank 0), deleting the run there first where `replace` (plan_output's) says
    why. Returns whether this call created it."""
    if replace:
        deleted = _delete_run(out)
        if replace == "--overwrite":
            log_print(f"--overwrite: deleted the earlier run in {out} ({', '.join(deleted)})")
        else:
            log_print(f"{replace}: {out} holds a run stopped before its first checkpoint, so nothing to continue: "
                      f"deleted it ({', '.join(deleted)}) and starting it over")
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    return created


def discard_failed_start(out, created):
    """A new run that failed before its first optimizer step: remove what it wrote (the whole directory
    if it made it). Never called for a resumed run, whose files belong to the run it continues."""
    _delete_run(out)
    if created:
        shutil.rmtree(out, ignore_errors=True)
