"""Where a run is: what the loop advances, a checkpoint records and a resumed run starts from."""
import time
from dataclasses import dataclass, field

__all__ = ["TrainState"]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch done (a step is --grad-accum-steps of them)
    best: dict = field(default_factory=lambda: {"acc1": -1.0})  # the best validation's acc1 and step
    val: dict | None = None  # the last validation's results
    kept: list = field(default_factory=list)  # the validations --keep-checkpoints keeps ({"acc1", "step"})
    schedule_changes: list = field(default_factory=list)  # each --extend-epochs / --extend-steps applied
    seen_before: int = 0  # images trained on, and seconds of training, before this process's part of the run
    seconds_before: float = 0.0
    seen: int = 0  # images trained on by this process's part of the run (all ranks)
    started: float = 0.0  # time.perf_counter() at begin()
    validating: float = 0.0  # seconds of this process's part spent validating, not training
    first_step: int = 0  # the step begin() found

    @classmethod
    def from_checkpoint(cls, checkpoint):
        c = checkpoint
        return cls(step=c["step"], epoch=c["epoch"], batch_in_epoch=c["batch_in_epoch"], best=c["best"],
                   val=c.get("val"), kept=c.get("kept", []), schedule_changes=c.get("schedule_changes", []),
                   seen_before=c.get("seen", 0), seconds_before=c.get("train_seconds", 0.0))

    def begin(self):
        """The training of this process starts now (its seconds and images counted from here)."""
        self.started, self.first_step = time.perf_counter(), self.step

    @property
    def seen_total(self):
        return self.seen_before + self.seen

    @property
    def train_seconds(self):
        """Seconds of training, validation not counted (summary.json's, and images/s over them)."""
        return self.seconds_before + time.perf_counter() - self.started - self.validating

    def entries(self):
        """What a checkpoint records of the run's place, by the keys it has always had."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "best": self.best,
                "val": self.val, "kept": self.kept, "schedule_changes": self.schedule_changes,
                "seen": self.seen_total, "train_seconds": self.train_seconds}
