"""The run's options: its batch, folder, checkpoints, evaluations, logging and device; how its ranks hold the
model."""
import os
from dataclasses import dataclass

from ...cli import UsageError, blame, parse_device
from .component import Component, option
from .kinds import AT_LEAST_1, NON_NEGATIVE, POSITIVE


@dataclass
class RunOptions(Component):
    group = "run"

    batch_size: int = option(128, "global batch size (all ranks, one optimizer step)", AT_LEAST_1)
    eval_batch_size: int | None = option(None, "evaluation batch size per rank (default: the training micro-batch)",
                                         AT_LEAST_1)
    output: str | None = option(None, "output directory (default: runs/<date-time>-<model>); one that holds a run "
                                      "needs --resume or --overwrite")
    resume: str | None = option(None, "auto (the output directory's last checkpoint, if any) or a checkpoint path")
    overwrite: bool = option(False, "start over in an --output that holds a run, deleting that run's files")
    save_every: int = option(0, "also checkpoint every N optimizer steps (0: at evaluations only)", NON_NEGATIVE)
    eval_every: int = option(1, "evaluate (and checkpoint) every N epochs", AT_LEAST_1)
    keep_checkpoints: int = option(1, "keep the N best validated checkpoints (above 1: as checkpoint-step<S>.pt), "
                                      "besides checkpoint-last.pt", AT_LEAST_1)
    eval_every_steps: int | None = option(None, "also evaluate (and checkpoint) every N optimizer steps (default: "
                                                "off)", AT_LEAST_1)
    log_every: int = option(20, "log every N optimizer steps", AT_LEAST_1)
    device: str | None = option(None, "cpu | cuda | cuda:N (default: cuda when available)")
    seed: int = option(0, "seed of every random generator", NON_NEGATIVE)
    deterministic: bool = option(False, "deterministic algorithms and per-sample seeded augmentation")
    ptq_report: list[str] = option(["fp16_32", "fp16_16", "bf16"], "formats evaluated after training (PTQ); '' for "
                                                                   "none")
    wandb: bool = option(False, "log to Weights & Biases when installed (offline works)")
    max_time: float | None = option(None, "stop training after this many seconds, then evaluate (default: no "
                                          "limit)", POSITIVE)
    quiet: bool = option(False, "no progress bars or per-step lines (results, validation and errors still print); "
                                "bars are drawn only on a terminal anyway")

    def check(self, config, where):
        if self.overwrite and self.resume:
            raise UsageError("--overwrite starts the run over and --resume continues it: give one")
        from ...quant import parse_recipe

        for fmt in self.ptq_report:
            with blame(where("ptq_report")):
                parse_recipe(fmt, where("ptq_report"))
        parse_device(self.device, where("device"))
        from ..sharded_checkpoint import settled

        if self.resume not in (None, "auto") and not os.path.exists(settled(self.resume)):
            raise UsageError(f"{where('resume')}: no checkpoint at {self.resume!r} (use 'auto' or a file path)")


@dataclass
class ParallelOptions(Component):
    """How torchrun's ranks hold the model (training/parallel.py): each all of it (DDP), or a shard (FSDP2)."""

    group = "run"

    fsdp: bool = option(False, "shard the weights, gradients and optimizer state over torchrun's ranks (FSDP2); "
                               "checkpoints become sharded folders (<name>.dcp)")
    fsdp_hybrid: bool = option(False, "with --fsdp: shard within each node and replicate across nodes (HSDP: less "
                                      "traffic between nodes, each rank holding more)",
                               needs=("--fsdp", lambda c: c["fsdp"]))
    dist_timeout: float = option(1800.0, "seconds a collective waits for every rank before the run stops (a rank "
                                         "that died or hangs)", POSITIVE)

    def check(self, config, where):
        if self.fsdp and config["amp"] == "fp16":  # refused in one line rather than run unsharded or wrong
            raise UsageError(f"{where('fsdp')} with {where('amp')} fp16: sharded training has no fp16 loss scaler "
                             "here; use --amp bf16 (fp32's range, no scaler needed)")
