"""The options of the optimizer, its schedule and the arithmetic it runs in."""
from dataclasses import dataclass

from ...cli import UsageError, blame
from .component import Component, option
from .flags import show
from .kinds import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, Range


@dataclass
class OptimOptions(Component):
    group = "optim"

    opt: str = option("adamw", "adamw | sgd | lamb", ("adamw", "sgd", "lamb"))
    lr: float = option(1e-3, "peak learning rate (for the --lr-base-size batch, if set)", POSITIVE)
    lr_base_size: int | None = option(None, "scale lr by global batch / this (DeiT: 512; default: no scaling)",
                                      AT_LEAST_1)
    weight_decay: float = option(0.05, "decoupled weight decay (not on biases, norms, tokens, pos-embeds)",
                                 NON_NEGATIVE)
    momentum: float = option(0.9, "SGD momentum (Nesterov when > 0)", FRACTION,
                             needs=("--opt sgd", lambda c: c["opt"] == "sgd"))
    betas: list[float] = option([0.9, 0.999], "Adam/LAMB betas", FRACTION,
                                needs=("--opt adamw or lamb", lambda c: c["opt"] in ("adamw", "lamb")))
    clip_grad: float | None = option(None, "clip the gradient norm to this (default: off)", POSITIVE)
    clip_mode: str = option("norm", "what --clip-grad bounds: norm (the whole gradient's norm, timm's default) | "
                                    "param (each parameter's own norm, as DINO's clip_gradients)", ("norm", "param"),
                            needs=("--clip-grad", lambda c: c["clip_grad"]))
    grad_accum_steps: int = option(1, "micro-batches per optimizer step", AT_LEAST_1)

    def check(self, config, where):
        if config["batch_size"] % self.grad_accum_steps:
            raise UsageError(f"batch_size ({config['batch_size']}) must be divisible by grad_accum_steps "
                             f"({self.grad_accum_steps})")
        if len(self.betas) != 2:
            raise UsageError(f"{where('betas')} must be two numbers beta1,beta2 in [0, 1), got {show(self.betas)}")


_RESUMED = ("--resume (it lengthens a run that exists)", lambda c: c["resume"])
_STEP = ("--sched step", lambda c: c["sched"] == "step")


@dataclass
class ScheduleOptions(Component):
    group = "schedule"
    # alternatives: setting one at a later layer (file < flag < --set) clears the other
    EXCLUSIVE = {"epochs": "steps", "steps": "epochs", "warmup_epochs": "warmup_steps",
                 "warmup_steps": "warmup_epochs"}

    sched: str = option("cosine", "cosine | linear | step | constant (per step)",
                        ("cosine", "linear", "step", "constant"))
    epochs: int | None = option(None, "training length in epochs, unless --steps", AT_LEAST_1, shown="300")
    steps: int | None = option(None, "training length in optimizer steps, instead of --epochs", AT_LEAST_1)
    extend_epochs: int | None = option(None, "with --resume: lengthen the run's schedule by N epochs (recorded in "
                                             "the run; the learning rate follows the longer schedule from the step "
                                             "resumed)", AT_LEAST_1, needs=_RESUMED)
    extend_steps: int | None = option(None, "with --resume: lengthen a --steps run's schedule by N optimizer steps "
                                            "(as --extend-epochs)", AT_LEAST_1, needs=_RESUMED)
    warmup_epochs: float = option(0.0, "linear warmup in epochs, rounded to whole steps (also with --steps)",
                                  NON_NEGATIVE)
    warmup_steps: int | None = option(None, "linear warmup in optimizer steps, instead of --warmup-epochs",
                                      NON_NEGATIVE)
    warmup_lr: float = option(1e-6, "learning rate at the start of warmup", NON_NEGATIVE)
    min_lr: float = option(1e-5, "final learning rate of cosine/linear decay", NON_NEGATIVE,
                           needs=("--sched cosine or linear", lambda c: c["sched"] in ("cosine", "linear")))
    decay_milestones: list[float] = option([0.5, 0.75], "step schedule: fractions of training",
                                           Range(0, 1, True, True), needs=_STEP)
    decay_rate: float = option(0.1, "step schedule: factor at each milestone", POSITIVE, needs=_STEP)

    def check(self, config, where):
        for a, b in (("epochs", "steps"), ("warmup_epochs", "warmup_steps"), ("extend_epochs", "extend_steps")):
            if config[a] is not None and config[b] is not None:
                raise UsageError(f"give --{a.replace('_', '-')} or --{b.replace('_', '-')}, not both")
        if self.decay_milestones != sorted(self.decay_milestones):
            raise UsageError(f"{where('decay_milestones')} must be increasing fractions of training, "
                             f"got {show(self.decay_milestones)}")


@dataclass
class PrecisionOptions(Component):
    group = "precision"

    amp: str = option("none", "autocast: none | bf16 | fp16 (fp16 with a GradScaler)", ("none", "bf16", "fp16"))
    quant: str | None = option(None, "quantization-aware training: FP16_16, FP16_32, TF32, BF16, FP8_E4M3, "
                                     "FP8_E5M2, INT8 (dynamic scales), float(e=,m=), ... (default: off)")
    quant_grad: str | None = option(None, "with --quant: also round gradients to this format",
                                    needs=("--quant (gradients are rounded only in quantization-aware training)",
                                           lambda c: c["quant"]))
    compile: bool = option(False, "torch.compile the model")
    grad_checkpointing: bool = option(False, "recompute each block's activations in the backward pass (activation "
                                             "checkpointing: less memory, ~1/3 more compute)")
    ema: float = option(0.0, "EMA decay of the weights (0: off; DeiT: 0.99996)", FRACTION)

    def check(self, config, where):
        from ...quant import parse_format, parse_recipe

        if self.quant:
            with blame(where("quant")):
                recipe = parse_recipe(self.quant, where("quant"))
            if self.quant_grad and recipe.is_scaled:
                raise UsageError(f"{where('quant_grad')}: the scaled recipe {recipe.name} rounds no gradients; "
                                 "use a plain recipe (FP16_16, BF16, float(e=,m=)...) with --quant-grad")
        if self.quant_grad:
            with blame(where("quant_grad")):
                parse_format(self.quant_grad, where("quant_grad"))
