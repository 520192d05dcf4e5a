"""Which run this command is: its output folder, and for a resumed run the checkpoint it continues, the
configuration it keeps (only where and how it runs may change), whether it is lengthened, and whether
it is finished already (then nothing is touched). Decided before minutes of data loading, and before
any file is written."""
import json
import os
from dataclasses import dataclass

from ..cli import UsageError
from . import config as config_lib
from .rundir import last_checkpoint, plan_output
from .state import read_training_checkpoint

__all__ = ["RunPlan", "plan_run", "finished", "finished_run"]


@dataclass
class RunPlan:
    cfg: dict  # the configuration to train with (a resumed run's own, merged with what may change)
    out: str  # the output folder
    resume: str | None = None  # the checkpoint continued
    checkpoint: dict | None = None  # its contents (load_state)
    extension: dict | None = None  # {"flag", "by"}: --extend-epochs / --extend-steps applied to cfg
    replace: str | None = None  # why the run in `out` is deleted first (rundir.open_output), if it is

    @property
    def run_dir(self):
        return os.path.dirname(os.path.abspath(self.resume))

    def done(self, total_steps=None):
        """Whether the resumed run has nothing left to do. total_steps: its length as this run computes it
        (None: as its checkpoint records it, which an earlier release's does not)."""
        if self.resume is None:
            return False
        if total_steps is None:
            if self.extension is not None or self.checkpoint.get("total_steps") is None:
                return False
            total_steps = self.checkpoint["total_steps"]
        return self.checkpoint["step"] >= total_steps and finished(self.run_dir, self.checkpoint)

    @property
    def pending_val(self):
        """Whether the resumed run was stopped in a validation: it repeats that first."""
        return bool(self.resume and self.checkpoint.get("pending_val"))

    def record_resume(self, log, state, total_steps):
        """A resumed run's lengthening, into its schedule_changes (state: its TrainState), and the lines
        that say it and where the run goes on from. Nothing for a new run."""
        if self.resume is None:
            return
        if self.extension is not None:
            change = dict(self.extension, step=state.step, from_steps=self.checkpoint.get("total_steps"),
                          to_steps=total_steps)
            state.schedule_changes.append(change)
            log.print(f"schedule lengthened ({change['flag']} {change['by']}): {change['from_steps']} -> "
                      f"{change['to_steps']} steps at step {state.step}; the learning rate follows the longer "
                      "schedule from here")
            log.log({"step": state.step, **change}, kind="schedule")
        left = ("; its training is done, its outputs are not: writing them" if state.step >= total_steps else "") + \
            ("; first the validation it was stopped in" if self.pending_val else "")
        log.print(f"resumed from {self.resume} at step {state.step} (epoch {state.epoch}, batch "
                  f"{state.batch_in_epoch}){left}")


def plan_run(cfg, origin, dist):
    """The RunPlan of cfg (origin: where each value came from, config.resolve), the same on every rank."""
    out, resume, replace = plan_output(cfg, dist)  # decided and checked now; created once everything is built
    plan = RunPlan(cfg, out, resume, replace=replace)
    if resume:  # the run goes on as it was configured: only where and how it runs may change
        plan.checkpoint = read_training_checkpoint(resume, "--resume")
        plan.cfg = config_lib.for_resume(plan.checkpoint["config"], cfg, origin, resume)
        plan.extension = lengthen(plan.cfg, plan.checkpoint, plan.run_dir, out, resume)
    # before minutes of data loading, not after (a resumed run's weights come from its checkpoint)
    for key in ("teacher_checkpoint",) + (() if resume else ("init_checkpoint",)):
        if plan.cfg[key] and not os.path.exists(plan.cfg[key]):
            raise UsageError(f"{origin.get(key, config_lib.flag_of(key))}: no file at {plan.cfg[key]!r}")
    return plan


def lengthen(cfg, state, run_dir, out, resume):
    """--extend-epochs / --extend-steps on a resumed run: its length in cfg made longer, and
    {"flag", "by"} to record; None without them. A finished run is never overwritten: lengthening one
    continues it into a new --output."""
    key = "extend_epochs" if cfg["extend_epochs"] else "extend_steps" if cfg["extend_steps"] else None
    if key is None:
        return None
    flag, by = config_lib.flag_of(key), cfg[key]
    unit = "steps" if cfg["steps"] else "epochs"
    if key != f"extend_{unit}":
        raise UsageError(f"{flag} {by}: the run's length is in {unit} (--{unit}); lengthen it with --extend-{unit}")
    if finished(run_dir, state) and os.path.abspath(out) == run_dir:
        raise UsageError(f"{flag} {by}: {run_dir} is a finished run, and a finished run is never overwritten: "
                         f"continue it into a new folder with --resume {resume} --output NEW_FOLDER {flag} {by}")
    cfg[unit] = (cfg[unit] or 300) + by  # (an epochs run without --epochs had the default 300)
    cfg[key] = None  # applied once: a later resume of the longer run must not lengthen it again
    return {"flag": flag, "by": by}


def finished(out, state):
    """A checkpoint at the run's last step whose outputs are written (summary.json, the last of them, of
    this step: a --max-time stop writes one too) and that was not saved in the middle of a validation."""
    try:
        with open(os.path.join(out, "summary.json")) as f:
            steps = json.load(f).get("steps")
    except (OSError, ValueError):
        return False
    return steps == state["step"] and not state.get("pending_val")


def finished_run(plan, say, dist, total_steps=None):
    """A resumed run that has nothing left to do: said so, and not one of its files is touched."""
    out, state = plan.run_dir, plan.checkpoint
    summary_path = os.path.join(out, "summary.json")
    last = last_checkpoint(out) or os.path.join(out, "checkpoint-last.pt")
    total = state["total_steps"] if total_steps is None else total_steps
    say(f"{out}: the run is finished (step {state['step']} of {total}); nothing to do. Its results: "
        f"{summary_path}. To train on from its weights, start a new run: --init-checkpoint {last} --output NEW_FOLDER")
    dist.close()
    with open(summary_path) as f:
        return json.load(f)
