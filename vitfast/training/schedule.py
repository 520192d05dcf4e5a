"""The run's length in optimizer steps and its learning rate at each: the base rate scaled with the
batch (--lr-base-size), the warmup planned against the run's length, then the decay (optim.lr_at)."""
from ..cli import UsageError, plural
from . import config as config_lib
from .config.optimization import OptimOptions, ScheduleOptions
from .optim import lr_at, warmup_length

__all__ = ["Schedule"]


class Schedule:
    """total_steps, epochs, lr (the peak rate), warmup_steps and warmup_note (what the header says of them);
    lr_at(step). origin: where each configured value came from (config.resolve), for refusals."""

    def __init__(self, cfg, origin, steps_per_epoch):
        self.cfg, self.opts, self.steps_per_epoch = cfg, ScheduleOptions.of(cfg), steps_per_epoch
        self.total_steps = self.opts.steps or (self.opts.epochs or 300) * steps_per_epoch
        self.epochs = -(-self.total_steps // steps_per_epoch)
        optim = OptimOptions.of(cfg)
        self.lr = optim.lr * (cfg["batch_size"] / optim.lr_base_size if optim.lr_base_size else 1.0)
        self.warmup_steps, self.warmup_note = self.plan_warmup(origin)

    def lr_at(self, step):
        o = self.opts
        return lr_at(step, self.total_steps, self.warmup_steps, self.lr, o.warmup_lr, o.min_lr, o.sched,
                     o.decay_milestones, o.decay_rate)

    def plan_warmup(self, origin):
        """(warmup steps, what the header says of them). A warmup the user set at or past the run's length is
        refused; a model's default one (meant for its default length) is dropped, and the header says so."""
        cfg, o, per_epoch, total = self.cfg, self.opts, self.steps_per_epoch, self.total_steps
        steps = warmup_length(o.warmup_epochs, o.warmup_steps, per_epoch)
        key = "warmup_steps" if o.warmup_steps is not None else "warmup_epochs"
        note = "" if key == "warmup_steps" else f" ({o.warmup_epochs:g} epochs of {plural(per_epoch, 'step')})"
        if steps < total:
            return steps, note
        in_steps = "" if key == "warmup_steps" else f" (= {plural(steps, 'step')})"
        too_long = f"{getattr(o, key):g}{in_steps} is at or past the run's {plural(total, 'step')}"
        if key in origin:
            raise UsageError(f"{config_lib.origin_of(origin)(key)} {too_long}: give a shorter warmup, or "
                             f"{config_lib.flag_of(key)} 0 for none")
        # the method's defaults are layered over the model's (config.own_defaults): theirs first
        owner = f"--ssl {cfg['ssl']}" if key in config_lib.method_defaults(cfg["ssl"]) else \
            cfg["model"] if key in config_lib.MODEL_DEFAULTS.get(cfg["model"], {}) else "the"
        return 0, f"none: {owner}'s default {config_lib.flag_of(key)} {too_long}".replace("the's", "the")
