"""Run logging: metrics.jsonl (one JSON object per logged step and per evaluation), TensorBoard event
files and wandb when installed, a tqdm bar on a terminal and plain lines otherwise. Rank 0 only."""
import json
import math
import os
import sys
import time


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
        self.tty = sys.stderr.isatty()

    def progress(self, total, initial=0):
        if self.enabled and self.tty:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

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
        if self.bar is not None and kind == "train":
            self.bar.set_postfix_str(text, refresh=False)
        else:
            self.print(f"[{kind}] {text}")

    def advance(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def print(self, text):
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
