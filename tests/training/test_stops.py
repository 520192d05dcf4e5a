"""No stop loses a run's outputs (issue 62, item 2), through the real command line: Ctrl-C in a validation,
mid-run or the last one, is followed on resume by that validation; a stop after the last step but before
the outputs has them written on resume; a double Ctrl-C says what is true and prints no traceback."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from vitfast.train import main as train_main
from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

# validation 4 images at a time (500 batches of the 2,000 built-in images, ~1 s): long enough for a Ctrl-C
# sent as its first line prints to land in it
TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
        "--batch-size", "32", "--eval-batch-size", "4", "--deterministic", "--log-every", "1"]


def train(args, cwd):
    return subprocess.run([sys.executable, "-m", "vitfast.train", *args], cwd=cwd, env=COMMAND_ENV, capture_output=True,
                          text=True, timeout=600)


def interrupt(args, cwd, after, twice=False, signum=signal.SIGINT):
    """Run vitfast.train and send Ctrl-C (or `signum`) once a line holding `after` has printed; `twice`: again
    as soon as the first has been handled (its message on stderr), while the step it lets finish is still
    running. (return code, stdout, stderr)."""
    with open(cwd / "stderr.txt", "w") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "vitfast.train", *args], cwd=cwd, env=COMMAND_ENV,
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        lines = []
        for text in proc.stdout:
            lines.append(text)
            if after in text:
                if twice:
                    time.sleep(0.5)  # into the next step (~3 s), not at the check right after this line
                proc.send_signal(signum)
                deadline = time.time() + 60
                while twice and "Ctrl-C: finishing this step" not in (cwd / "stderr.txt").read_text() and \
                        time.time() < deadline:
                    time.sleep(0.01)
                if twice:
                    proc.send_signal(signal.SIGINT)
                break
        stdout, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + stdout, (cwd / "stderr.txt").read_text()


def val_records(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "val"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_in_a_mid_run_validation_runs_it_first_on_resume(tmp_path, signum):
    # a validation every 2 steps (--eval-every-steps; an epoch's is the same validate-and-checkpoint)
    args = TINY + ["--steps", "4", "--eval-every-steps", "2", "--ptq-report", ""]
    assert train(args + ["--output", "straight"], tmp_path).returncode == 0
    code, out, err = interrupt(args + ["--output", "run"], tmp_path, "validation (", signum=signum)
    assert code == 128 + signum and "Traceback" not in err, err
    state = load_state(tmp_path / "run" / "checkpoint-last.pt")
    assert state["step"] == 2 and state["pending_val"]
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert f"{name}: stopped at step 2 of 4; run/checkpoint-last.pt holds it" in out
    resumed = train(["--output", "run", "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "first the validation it was stopped in" in resumed.stdout
    got, want = val_records(tmp_path / "run" / "metrics.jsonl"), val_records(tmp_path / "straight" / "metrics.jsonl")
    assert [(r["step"], r["acc1"], r["loss"]) for r in got] == [(r["step"], r["acc1"], r["loss"]) for r in want]
    a, b = (load_state(tmp_path / name / "checkpoint-last.pt")["model"] for name in ("straight", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("after", ["validation (", "PTQ fp16_16 ("])
def test_a_stop_after_the_last_step_has_the_outputs_written_on_resume(tmp_path, monkeypatch, after):
    args = TINY + ["--steps", "3", "--ptq-report", "fp16_16"]
    code, out, err = interrupt(args + ["--output", "run"], tmp_path, after)
    assert code == 130 and "Traceback" not in err, err
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()
    if after.startswith("PTQ"):
        assert "stopped while writing the run's outputs; its training is done and saved in run/checkpoint-last.pt" in out
    else:
        assert "stopped at step 3 of 3; run/checkpoint-last.pt holds it" in out
    resumed = train(["--output", "run", "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "its training is done, its outputs are not: writing them" in resumed.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and set(summary["ptq"]) == {"fp32", "fp16_16"} and summary["images_per_second"] > 0
    assert (tmp_path / "run" / "model.safetensors").exists()
    monkeypatch.chdir(tmp_path)
    assert train_main(["--output", "run", "--resume", "auto"]) == summary  # now it is finished: nothing to do


def test_a_double_ctrl_c_before_any_checkpoint_removes_the_run_and_says_so(tmp_path):
    # steps of ~3 s (512 images of the default model): the second Ctrl-C lands inside the step the first lets finish
    code, out, err = interrupt(["--batch-size", "512", "--workers", "2", "--log-every", "1", "--output", "run"],
                               tmp_path, "  step 2  ", twice=True)
    assert code == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "before any checkpoint was written (Ctrl-C twice); run is removed: the same command starts the run " \
           "again" in out
    assert not (tmp_path / "run").exists()
