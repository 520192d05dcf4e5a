"""Stopping and continuing a run as a user does (real commands in subprocesses, CPU): Ctrl-C leaves a
checkpoint that `--resume auto` continues bit for bit; a resumed run keeps its own configuration and
refuses one that would change what it trains; a finished run resumed changes no file."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vitfast.training.interrupt import StopRequest
from vitfast.training.run_data import SeededSamples
from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

TINY = ["--model", "vit_tiny_patch16_224", "--data", "builtin", "--img-size", "32",
        "--model-kwargs", "patch_size=8,embed_dim=32,depth=1,num_heads=2,drop_path_rate=0.1", "--batch-size", "32",
        "--ptq-report", "", "--log-every", "5", "--deterministic", "--reprob", "0.25", "--mixup", "0.2"]


def train(args, cwd):
    return subprocess.run([sys.executable, "-m", "vitfast.train", *args], cwd=cwd, env=COMMAND_ENV, capture_output=True,
                          text=True, timeout=600)


def digest(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_ctrl_c_saves_a_checkpoint_that_resume_auto_continues_bit_exactly(tmp_path):
    steps = 120  # the Ctrl-C lands at about step 5, a hundred steps before the end
    straight = train(TINY + ["--steps", str(steps), "--output", "a"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    metrics = tmp_path / "b" / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vitfast.train", *TINY, "--steps", str(steps), "--output", "b"],
                            cwd=tmp_path, env=COMMAND_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.002)  # the first log line (step 5): the loop and its Ctrl-C handler are running
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" not in stderr  # the line below says what happened
    stopped_at = load_state(tmp_path / "b" / "checkpoint-last.pt")["step"]
    assert 5 <= stopped_at < steps, "the interrupt must land mid-run"
    assert f"Ctrl-C: stopped at step {stopped_at} of {steps}" in stdout
    assert "--output b --resume auto" in stdout

    # Only the folder and --resume: the run goes on with its own saved configuration.
    resumed = train(["--output", "b", "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {stopped_at}" in resumed.stdout
    a = load_state(tmp_path / "a" / "checkpoint-last.pt")["model"]
    b = load_state(tmp_path / "b" / "checkpoint-last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_samples_seed_is_the_cpu_generators_alone(monkeypatch):
    """--deterministic seeds each sample's transforms on the CPU generator and puts it back: the images
    torch.manual_seed gave before (so a run resumes onto the same augmentations), with no GPU generator
    reseeded on the way (nor, before CUDA starts, a call queued with its stack for every sample)."""
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    samples = SeededSamples(Noise(), seed=7)
    samples.epoch = 2
    gpu_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", gpu_seeds.append)
    before = torch.get_rng_state()
    got = samples[3]
    assert gpu_seeds == [] and torch.equal(torch.get_rng_state(), before)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((7 * 1_000_003 + 2) * 10_000_019 + 3)
        assert torch.equal(got, torch.rand(3))


def test_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a pytest-xdist worker
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first only asks: the step in progress goes on
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert not stop.at_boundary  # nothing is saved on the way out
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before  # whatever was there before, put back


def test_ctrl_c_between_steps_stops_at_once_at_a_step_boundary():
    stop = StopRequest().install()
    try:
        stop.safe = True  # validating: no training state moves
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.at_boundary
    finally:
        stop.restore()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    proc = train(TINY + ["--steps", "4", "--output", "run"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_a_finished_run_resumed_with_its_folder_alone_changes_no_file(finished):
    before = digest(finished / "run")
    proc = train(["--output", "run", "--resume", "auto"], finished)
    assert proc.returncode == 0, proc.stderr
    assert "the run is finished (step 4 of 4); nothing to do" in proc.stdout
    assert digest(finished / "run") == before


@pytest.mark.parametrize("change,named", [
    (["--epochs", "4"], "--epochs 4 (the run has None)"),
    (["--lr", "0.5"], "--lr 0.5 (the run has 0.001)"),
    (["--model-kwargs", "patch_size=8,embed_dim=32,depth=2,num_heads=2"], "--model-kwargs"),
])
def test_a_change_to_what_the_run_trains_is_refused_by_name(finished, change, named):
    before = digest(finished / "run")
    proc = train(TINY + ["--output", "run", "--resume", "auto"] + change, finished)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr and "would change what the run trains" in proc.stderr
    assert digest(finished / "run") == before


def test_resume_may_change_how_the_run_reports(tmp_path):
    first = train(TINY + ["--steps", "6", "--output", "run", "--max-time", "0.001"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    stopped = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]
    assert stopped < 6
    # --log-every and --quiet are how it runs, not what it trains; --max-time given now replaces the old one
    proc = train(["--output", "run", "--resume", "auto", "--log-every", "3", "--max-time", "600", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 6
    assert "[train]" not in proc.stdout  # --quiet: no per-step lines
