"""When a run validates, and what a validation leaves: its record in the log, the best result, and the
checkpoints written with it. A validation stopped by Ctrl-C or a signal (in one process) is pending: the
checkpoint saved then holds the random state it started from (a DataLoader draws its seed from it), and
the resumed run repeats it first."""
import time

from .config.run import RunOptions
from .state import rng_state

__all__ = ["Validator"]


class Validator:
    """Due every --eval-every epochs and at the run's end (and every --eval-every-steps steps), never
    twice at one step. stop: the run's StopRequest, told that a stop may end a validation at once."""

    def __init__(self, cfg, method, loader, amp_dtype, dist, parallel, log, checkpointer, state, total_steps,
                 stop):
        self.opts = RunOptions.of(cfg)  # --eval-every, --eval-every-steps
        self.method, self.loader, self.amp_dtype, self.dist = method, loader, amp_dtype, dist
        self.parallel, self.log, self.checkpointer, self.state = parallel, log, checkpointer, state
        self.total_steps, self.stop = total_steps, stop
        self.rng_before = None  # the random state the last validation started from
        self.last_step = None  # the step of the last validation

    def due_in_epoch(self):
        """After an optimizer step, within an epoch (--eval-every-steps; the run's end validates after it)."""
        every, step = self.opts.eval_every_steps, self.state.step
        return bool(every) and step % every == 0 and step < self.total_steps

    def due_after_epoch(self, epoch_done, stopped):
        """After the loop leaves an epoch (epoch_done: at its end, rather than stopped in it)."""
        state = self.state
        due = (epoch_done and state.epoch % self.opts.eval_every == 0) or state.step >= self.total_steps or stopped
        return due and self.last_step != state.step  # not twice at one step (--eval-every-steps)

    def run(self):
        state, start = self.state, time.perf_counter()
        self.rng_before, self.last_step = rng_state(), state.step
        self.stop.safe = True  # no training state moves while validating: one process can stop here at once
        state.val = self.method.validate(self.loader, self.dist.device, self.amp_dtype, self.dist, desc="validation",
                                         model=self.parallel.plain(self.method.reported))
        state.validating += time.perf_counter() - start  # before the checkpoint records train_seconds
        self.stop.safe = False  # (left set when the validation fails: the run's guard reads it)
        # the images and seconds of training before it: a curve against epochs or minutes, across resumes
        self.log.log({"step": state.step, "epoch": state.epoch, "seen": state.seen_total,
                      "train_seconds": round(state.train_seconds, 2), **state.val}, kind="val")
        improved = state.val["acc1"] > state.best["acc1"]
        if improved:
            state.best = {"acc1": state.val["acc1"], "step": state.step}
        saving = time.perf_counter()
        self.checkpointer.validated(state.val["acc1"], improved)
        state.validating += time.perf_counter() - saving  # its checkpoints, after they recorded the seconds before

    def save_pending(self):
        """A stop ended the validation: checkpoint-last, to resume with it, from where it started."""
        self.checkpointer.save_last(rng=self.rng_before)
