"""What a run leaves when it ends before its last step, and the one line it says: Ctrl-C or a scheduler's
signal (a checkpoint, the command that continues, the exit status 128 + the signal's number, and at SLURM's
time limit the job requeued: slurm.py), a lost rank, out of memory, unreadable images, a loss or weights
gone inf/NaN (the checkpointer's stop), and a new run that failed before its first checkpoint (nothing
left behind)."""
import os

from ..cli import UsageError, is_out_of_memory, one_line
from ..data import UnreadableImagesError
from .interrupt import Stopped, StopRequest
from .rundir import discard_failed_start
from .slurm import requeue
from .state import load_state

__all__ = ["RunGuard"]


class RunGuard:
    """plan: the RunPlan; created: whether this run made its output folder; micro: images per forward."""

    def __init__(self, cfg, dist, say, log, plan, created, checkpointer, state, total_steps, micro):
        self.cfg, self.dist, self.say, self.log, self.plan, self.created = cfg, dist, say, log, plan, created
        self.checkpointer, self.state, self.total_steps, self.micro = checkpointer, state, total_steps, micro
        self.stop = StopRequest(dist)

    def train(self, loop, validator):
        """loop() (the training loop) under the guard; what it returns."""
        try:
            self.stop.install()
            return loop()
        except BaseException as e:
            self.failed(e, validator)
            raise
        finally:
            self.stop.restore()

    def failed(self, e, validator):
        stop, out, last = self.stop, self.plan.out, self.checkpointer.last
        step, total = self.state.step, self.total_steps
        stop.quiet()  # on the way out: a further Ctrl-C would only break the cleanup
        validating = stop.safe
        self.log.end_epoch()
        interrupted = isinstance(e, KeyboardInterrupt) and stop.requested
        if interrupted and stop.at_boundary:  # stopped while validating: the resumed run validates first
            validator.save_pending()
            stop.saved = True
        self.log.close()
        # a new run with nothing to continue from leaves no half-made run (a NaN stop keeps its metrics)
        if self.dist.is_main and not self.plan.resume and not os.path.exists(last) and not isinstance(e, SystemExit):
            discard_failed_start(out, self.created)
            if interrupted:
                self.say(f"stopped at step {step} of {total} before any checkpoint was written (Ctrl-C twice); "
                         f"{out} is removed: the same command starts the run again")
        elif interrupted:
            after = stop.seconds_since()
            saved = (f"{last} holds it" + ("" if after is None else f" (written {after:.2f} s after the signal)")
                     if stop.saved else f"not saved (Ctrl-C twice): {last} holds step {read_step(last)}")
            self.say(f"{stop.name}: stopped at step {step} of {total}; {saved}. Continue with: {self.again()}")
        if interrupted and stop.saved:  # said: the status tells a scheduler or a script which signal it was
            stop.all_done()
            queued = requeue(stop.stopping, self.again()) if self.dist.is_main else None
            if queued:
                self.say(queued)
            raise Stopped(stop.stopping) from e
        lost = self.dist.lost_rank(e)
        if lost:  # another rank died or hangs: this one cannot go on
            raise SystemExit(f"vitfast.train: rank {self.dist.rank} stops at step {step}: a collective failed "
                             f"({lost}); another rank died or hung. {last} holds step {read_step(last)}: continue "
                             "with the same command and --resume auto") from e
        if isinstance(e, UnreadableImagesError):  # the data, not vitfast: one line, like a missing dataset
            raise UsageError(f"--data {self.cfg['data']}: {one_line(e)}") from e
        if is_out_of_memory(e):
            raise UsageError(self.out_of_memory(validating)) from e

    def again(self):
        """The command that continues this run."""
        if self.dist.enabled:
            return f"the same torchrun command with --output {self.plan.out} --resume auto"
        return f"python -m vitfast.train --output {self.plan.out} --resume auto"

    def write_outputs(self, write):
        """write() (the finished run's outputs) where a signal stops at once: training is done and saved."""
        outputs = StopRequest(self.dist, at_once=True)
        try:
            outputs.install()
            return write()
        except BaseException as e:
            outputs.quiet()
            self.log.close()
            if isinstance(e, KeyboardInterrupt) and outputs.requested:
                self.say(f"{outputs.name}: stopped while writing the run's outputs; its training is done and saved "
                         f"in {self.checkpointer.last}. Write them with: {self.again()}")
                raise Stopped(outputs.stopping) from e
            if is_out_of_memory(e):
                raise UsageError(f"out of memory evaluating the trained model on {self.dist.device} at "
                                 f"{self.cfg['eval_batch_size'] or self.micro} images per batch (its training is "
                                 "done and saved): --resume auto --eval-batch-size N with a lower N writes its "
                                 "outputs") from e
            raise
        finally:
            outputs.restore()

    def out_of_memory(self, validating):
        """The one line for running out of memory in the training loop: the batch that did, and the way out."""
        cfg, device = self.cfg, self.dist.device
        if validating:
            return (f"out of memory validating on {device} at {cfg['eval_batch_size'] or self.micro} images per batch: "
                    "lower --eval-batch-size")
        accum = "" if cfg["grad_accum_steps"] == 1 else f" in {cfg['grad_accum_steps']} micro-batches"
        return (f"out of memory training on {device} at --batch-size {cfg['batch_size']}{accum} ({self.micro} images "
                "per forward and backward): lower --batch-size, or keep it and split each step with "
                "--grad-accum-steps N (--grad-checkpointing also takes less)")


def read_step(path):
    """The step a training checkpoint holds ('none' when there is no readable one)."""
    try:
        return load_state(path)["step"]
    except Exception:  # no file, or one cut short: the message says so rather than failing
        return "none"
