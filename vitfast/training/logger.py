"""Run logging: metrics.jsonl (one JSON object per logged step and per evaluation), TensorBoard event
files and wandb when installed; on the screen a tqdm bar per epoch on a terminal (the step's numbers in
it), plain lines otherwise, neither with --quiet. Rank 0 only."""
import json
import math
import os
import sys
import time

from .. import progress


class RunLogger:
    def __init__(self, output, config, enabled=True, use_wandb=False):
        self.enabled = enabled
        self.start = time.time()
        self.tb = self.wandb = self.bar = None
        if not enabled:
            return
        self.metrics = open(os.path.join(output, "metrics.jsonl"), "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output)
        except ImportError:
            pass
        if use_wandb:
            try:
                import wandb

                self.wandb = wandb.init(project="vitfast", config=config, dir=output,
                                        mode=os.environ.get("WANDB_MODE", "offline"))
            except ImportError:
                print("wandb is not installed: --wandb ignored", file=sys.stderr)

    def epoch_bar(self, epoch, epochs, total, initial=0):
        """A bar over this epoch's optimizer steps (epochs counted from 1, as people count them)."""
        self.end_epoch()
        if self.enabled and progress.bars_on():
            self.bar = progress.bar(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="step")

    def end_epoch(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def log(self, record, kind="train"):
        """Write one record everywhere; print it (or update the bar) on rank 0."""
        if not self.enabled:
            return
        record = {"kind": kind, "time": round(time.time() - self.start, 3), **record}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        step = record.get("step", 0)
        for k, v in record.items():
            if isinstance(v, (int, float)) and k not in ("step", "epoch", "time") and math.isfinite(v):
                if self.tb is not None:
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in record.items() if isinstance(v, (int, float))}, step=step)
        text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                         if k != "kind")
        if kind == "train" and self.bar is not None:  # the bar has its own step count and time: the rest, short
            self.bar.set_postfix_str(bar_text(record), refresh=False)
        elif kind != "train" or not progress.is_quiet():
            self.print(f"[{kind}] {text}")

    def advance(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def print(self, text):
        if self.enabled:
            progress.echo(text)

    def close(self):
        if not self.enabled:
            return
        self.enabled = False  # closed once, whichever way the run ends
        self.end_epoch()
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def bar_text(record):
    """A training record as a progress bar's postfix: loss, learning rate, images/s, the run's ETA."""
    eta = int(record.get("eta_s", 0))
    return (f"loss {record['loss']:.4g}  lr {record['lr']:.3g}  {record['images_per_second']:.0f} img/s  "
            f"run ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}")
