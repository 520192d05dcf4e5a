"""The training loop: epochs of micro-batches, each step warmup-cosine scheduled, accumulated, autocast,
scaled, clipped and applied; logging, periodic checkpoints, validation when due, and the stops (--steps
reached, --max-time, a signal at a step's end). What the objective changes is the method's (methods/)."""
import time

import torch

from .config.optimization import OptimOptions
from .config.run import RunOptions

__all__ = ["Loop", "to_device"]


def to_device(x, device):
    """A batch's images (a tensor, or a list of them: a method's views) on the device."""
    if isinstance(x, (list, tuple)):
        return [v.to(device, non_blocking=True) for v in x]
    return x.to(device, non_blocking=True)


class Loop:
    """train_model: the module run forward and backward (trained, wrapped or compiled); state: the run's
    TrainState, advanced here; stop: the run guard's StopRequest."""

    def __init__(self, cfg, data, method, train_model, trained, optimization, schedule, parallel, dist, log, state,
                 checkpointer, validator, stop):
        self.optim, self.run_opts = OptimOptions.of(cfg), RunOptions.of(cfg)
        self.data, self.method, self.train_model, self.trained = data, method, train_model, trained
        self.optimization, self.schedule, self.parallel = optimization, schedule, parallel
        self.dist, self.log = dist, log
        self.state, self.checkpointer, self.validator, self.stop = state, checkpointer, validator, stop
        self.stop_reason = None
        self.loss = None  # the last micro-batch's loss (a tensor on the device: read at log steps)
        self.last_log = None  # (time, images, seconds validating) at the previous log line: each line reports
        # its interval's training rate

    def run(self, pending_val=False):
        """Train to the schedule's end or a stop; the stop's reason (None: the end)."""
        state, total = self.state, self.schedule.total_steps
        self.last_log = (state.started, 0, state.validating)
        if pending_val:
            self.validator.run()
        while state.step < total and self.stop_reason is None:
            self.epoch()
        return self.stop_reason

    def epoch(self):
        """The rest of the current epoch (all of it, but for a resumed run's first), then what its end asks."""
        state, accum, per_epoch = self.state, self.optim.grad_accum_steps, self.data.steps_per_epoch
        total = self.schedule.total_steps
        loader = self.data.epoch_batches(state.epoch, state.batch_in_epoch)
        self.train_model.train()
        done = state.batch_in_epoch // accum  # steps of this epoch already taken (a resumed run)
        self.log.epoch_bar(state.epoch, self.schedule.epochs, min(per_epoch, done + total - state.step), done)
        for x, y in loader:
            if state.batch_in_epoch // accum >= per_epoch or state.step >= total:
                break
            if not self.train_step(x, y):
                continue
            if self.after_step():
                break
        self.log.end_epoch()
        if self.stop.stopping:
            self.stop_here()
        epoch_done = state.batch_in_epoch // accum >= per_epoch
        if epoch_done:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if self.validator.due_after_epoch(epoch_done, self.stop_reason):
            self.validated()

    def stop_here(self):
        """A stop asked from outside (Ctrl-C, SIGTERM, ...; every rank agreed to it at this step's end): save
        where the next run picks up (unless a validation at this step just did), and stop."""
        if self.checkpointer.last_step != self.state.step:
            self.checkpointer.save_last()
        self.stop.saved = True
        raise KeyboardInterrupt

    def train_step(self, x, y):
        """One micro-batch forward and backward; when it completes an accumulated step, the optimizer step.
        Whether it did."""
        state, opt, method, device = self.state, self.optimization, self.method, self.dist.device
        accum = self.optim.grad_accum_steps
        state.seen += len(y) * self.dist.world_size
        x, y = method.views(to_device(x, device), y.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=opt.amp_dtype, enabled=opt.amp_dtype is not None):
            self.loss = method.loss(self.train_model, x, y, state.step)
        self.checkpointer.watch.update(self.loss, state.step)  # read at log steps and checkpoints: no wait per step
        opt.scaler.scale(self.loss / accum).backward()
        state.batch_in_epoch += 1
        if state.batch_in_epoch % accum:
            return False
        for group in opt.optimizer.param_groups:
            group["lr"] = self.schedule.lr_at(state.step)
        if self.optim.clip_grad:
            opt.scaler.unscale_(opt.optimizer)
            self.parallel.clip_grad_(self.trained.parameters(), self.optim.clip_grad, self.optim.clip_mode)
        method.before_step(state.step, opt.optimizer)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.optimizer.zero_grad(set_to_none=True)
        method.after_step(state.step)
        state.step += 1
        self.log.advance()
        return True

    def after_step(self):
        """The log line, checkpoint and validation a step may be due; whether the epoch stops here."""
        run, state, total = self.run_opts, self.state, self.schedule.total_steps
        if state.step % run.log_every == 0 or state.step == total:
            self.log_step()
        if run.save_every and state.step % run.save_every == 0:
            self.checkpointer.save_last()
        if run.max_time and time.perf_counter() - state.started > run.max_time:
            self.stop_reason = f"--max-time {run.max_time} s reached"
            return True
        if self.stop.poll():  # the epoch's end saves and stops
            return True
        if self.validator.due_in_epoch():
            self.validated()
            self.train_model.train()
        return False

    def validated(self):
        """A validation, then the stop asked during it (under torchrun the ranks finish it first)."""
        self.validator.run()
        if self.stop.poll():
            self.stop_here()

    def log_step(self):
        state, total = self.state, self.schedule.total_steps
        self.checkpointer.check_loss()
        loss, now = self.loss.item(), time.perf_counter()  # the GPU has caught up: rates are true
        elapsed, (then, seen, validating) = now - state.started, self.last_log
        training = now - then - (state.validating - validating)  # the interval's seconds, less its validations
        self.log.log({"step": state.step, "epoch": state.epoch, "loss": loss,
                      "lr": self.optimization.optimizer.param_groups[0]["lr"],
                      "images_per_second": (state.seen - seen) / max(training, 1e-9),
                      "eta_s": elapsed / max(state.step - state.first_step, 1) * (total - state.step)})
        self.last_log = (now, state.seen, state.validating)
