"""The run's training checkpoints: what one holds, when each is written, and where. checkpoint-last (at
each validation, every --save-every steps and at a stop: what --resume continues), checkpoint-best (the
best validation) and checkpoint-step<S> (each of the --keep-checkpoints best, timm's --checkpoint-hist), as
whole files or, under --fsdp, sharded folders (checkpoint_layout.py). Nothing inf/NaN is ever saved."""
import os

import vitfast

from ..cli import blame
from .checkpoint_layout import checkpoint_layout
from .state import rng_state

__all__ = ["Checkpointer"]


class Checkpointer:
    """model: the whole model (its state is the checkpoint's "model"); trained: the module the optimizer
    trains (prepare()'s: the model, or a method's module around it); record: the run's configuration as
    config.yaml keeps it; state: the run's TrainState, read at each save; watch: the loss's NonFiniteWatch."""

    def __init__(self, out, cfg, dist, say, parallel, model, trained, optimization, method, record, total_steps,
                 state, watch):
        self.out, self.cfg, self.parallel, self.method = out, cfg, parallel, method
        self.model, self.trained, self.optimization = model, trained, optimization
        self.record, self.total_steps, self.state, self.watch = record, total_steps, state, watch
        self.layout = checkpoint_layout(cfg, dist, say)
        self.last, self.best = (self.path(name) for name in ("last", "best"))
        self.last_step = None  # the step checkpoint-last holds, once this process wrote it

    def path(self, name):
        return os.path.join(self.out, f"checkpoint-{name}{self.layout.suffix}")

    def restore(self, checkpoint, resume):
        """A resumed run's checkpoint into the modules, the loss scaler and the method (state: the run's
        place, TrainState.from_checkpoint)."""
        with blame(f"--resume {resume}", (ValueError, RuntimeError, KeyError)):
            self.layout.load(checkpoint, self.model, self.trained, self.optimization.optimizer, self.method.state)
            self.optimization.scaler.load_state_dict(checkpoint["scaler"])
            self.method.load_state(checkpoint)

    def check_loss(self):
        """Stop the run (keeping its last checkpoint) once a loss was inf/NaN."""
        bad = self.watch.check()
        if bad is not None:
            raise SystemExit(f"vitfast.train: the loss is {bad[1]} at step {bad[0]}; stopping{self.method.diverged()}. "
                             f"The last good checkpoint, if any, is intact: {self.last}")

    def save(self, path, rng=None):
        """A checkpoint of the run as it is now. rng: the random state to record in place of the present one
        (a validation's, saved while it was stopped, so that a resumed run repeats it from there)."""
        self.check_loss()
        if not self.parallel.all_finite(list(self.trained.parameters())):
            step, epoch = self.state.step, self.state.epoch
            raise SystemExit(f"vitfast.train: the weights became inf/NaN at step {step} (epoch {epoch}); stopping "
                             f"without saving them. The last good checkpoint, if any, is intact: {self.last}")
        extra = self.method.state()  # on every rank: a method may gather per-rank state (SwAV's queues)
        self.layout.save(path, self.model, self.trained, self.optimization.optimizer, {  # collective under --fsdp
            "scaler": self.optimization.scaler.state_dict(), **extra, "rng": rng_state() if rng is None else rng,
            **self.state.entries(), "total_steps": self.total_steps, "config": self.record,
            "pending_val": rng is not None, "vitfast_version": vitfast.__version__})

    def save_last(self, rng=None):
        self.save(self.last, rng)
        self.last_step = self.state.step

    def validated(self, acc1, improved):
        """After a validation scoring acc1 (improved: the best so far): checkpoint-best, the kept ones, and
        checkpoint-last (with each validation: a short epoch need not wait for a write)."""
        if improved:
            self.save(self.best)
        if self.cfg["keep_checkpoints"] > 1:
            self.keep_best(acc1)
        self.save_last()

    def keep_best(self, acc1):
        """checkpoint-step<S> for each of the best --keep-checkpoints validations; the others removed."""
        step, kept = self.state.step, self.state.kept
        ranked = sorted(kept + [{"acc1": acc1, "step": step}], key=lambda k: (-k["acc1"], k["step"]))
        kept[:] = ranked[:self.cfg["keep_checkpoints"]]
        if any(k["step"] == step for k in kept):
            self.save(self.path(f"step{step}"))
        for k in ranked[self.cfg["keep_checkpoints"]:]:
            self.layout.remove(self.path(f"step{k['step']}"))
