"""A run stopped by an earlier release continues with this one (--deterministic, CPU): its checkpoint
(tests/training/runs_before_trainer_parts, see the README there) resumes to the weights and optimizer
state of the same run trained here without a stop.

Not bit for bit: oneDNN and MKL pick their kernels by the CPU's instruction set, so another CPU model rounds
the stored run's first six steps differently (its loss at step 5 reads 2.2288611, this code's on a 2-core EPYC
2.2288609), and CI's machines vary. The float state must agree to within 1e-3 relative + 1e-4: on that EPYC
the rounding used at most 18% of it (supervised; DINO 0.3%), while resumes that read the data position one
batch off or lost Adam's first moments came out 188 to 929 times over it. Integer state is exact; bit-exact
resume within one version is test_resume's and test_ssl_guarantees'."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

from .test_resume import TINY

RUNS = Path(__file__).parent / "runs_before_trainer_parts"
DINO = ["--ssl", "dino", "--head-out-dim", "64", "--head-hidden-dim", "64", "--head-bottleneck-dim", "32",
        "--eval-every-steps", "10",
        # DINO's own crops, which the stored run took (its config.yaml keeps them) before the built-in data
        # brought crops of its own
        "--num-crops", "2,8", "--crop-scales", "0.4,1,0.05,0.4", "--crop-grayscale", "0.2"]
ARGS = {"supervised": TINY, "dino": TINY[:-4] + DINO}  # (DINO trains without --reprob and --mixup)


def train(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "vitfast.train", *args], cwd=cwd, env=COMMAND_ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def same(a, b, where=""):
    """a == b: float tensors to within another CPU's rounding carried through 34 steps, the others exactly."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{where}: {m}")
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")


@pytest.mark.parametrize("kind", sorted(ARGS))
def test_a_run_stopped_by_an_earlier_release_resumes_to_the_same_run(tmp_path, kind):
    before = load_state(RUNS / kind / "checkpoint-last.pt")
    assert (before["step"], before["total_steps"]) == (6, 40)
    shutil.copytree(RUNS / kind, tmp_path / "resumed")
    resumed = train(["--output", "resumed", "--resume", "auto"], tmp_path)
    assert "at step 6 (epoch 0, batch 6)" in resumed.stdout
    train(ARGS[kind] + ["--steps", "40", "--output", "straight"], tmp_path)
    a, b = (load_state(tmp_path / run / "checkpoint-last.pt") for run in ("straight", "resumed"))
    assert a["step"] == b["step"] == 40
    for key in ("model", "optimizer", "ema", "ssl", "best", "val"):
        same(a.get(key), b.get(key), key)
