"""Runs that survive preemption (issue 97, item 1), through the real command line on the CPU: SIGTERM (what
timeout, SLURM, Kubernetes and docker stop send) and SIGUSR1 (SLURM's --signal) finish the step in progress,
save checkpoint-last, say how to continue and exit with 128 + the signal's number, in one process and under
torchrun (DDP and FSDP; the ranks agree on the stop step even when one rank alone is signalled); the same
command with --resume auto then finishes bit-identically to a run never stopped (--deterministic). A run
killed before its first checkpoint is started over by --resume auto, the command a requeue repeats."""
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from vitfast.models.checkpoint import sharded_weights
from vitfast.training.interrupt import StopRequest
from vitfast.training.state import load_state
from tests.values import COMMAND_ENV

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs",
        "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2", "--batch-size", "32", "--ptq-report", "",
        "--deterministic", "--log-every", "1", "--device", "cpu"]
ONE = [sys.executable, "-m", "vitfast.train"]


def torchrun(port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m",
            "vitfast.train"]


def run(launch, args, cwd):
    return subprocess.run(launch + args, cwd=cwd, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)


def ranks(pid):
    """{rank: pid} of the training processes torchrun (pid) started, each in a session of its own."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError):
            continue
        if parent == pid and b"RANK" in env:
            found[int(env[b"RANK"])] = int(entry)
    return found


def stopped(launch, args, cwd, after, signum, target="launcher"):
    """Run, and once a line holding `after` has printed send `signum` to the launcher (python, or torchrun:
    as the terminal's Ctrl-C or a scheduler's signal to the job), to its whole process group (a DataLoader's
    workers too, as SLURM signals every process of a job step), or to rank 1 alone. (status, stdout, stderr)."""
    with open(cwd / "stderr.txt", "w") as errors:
        proc = subprocess.Popen(launch + args, cwd=cwd, env=COMMAND_ENV, stdout=subprocess.PIPE, stderr=errors,
                                text=True, start_new_session=True)
        lines = []
        for text in proc.stdout:
            lines.append(text)
            if after in text:
                if target == "group":
                    os.killpg(proc.pid, signum)
                else:
                    os.kill(ranks(proc.pid)[1] if target == "rank1" else proc.pid, signum)
                break
        stdout, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + stdout, (cwd / "stderr.txt").read_text()


def same_weights(a, b):
    a, b = (sharded_weights(p) if str(p).endswith(".dcp") else load_state(p)["model"] for p in (a, b))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_signal_finishes_the_step_saves_and_resume_auto_finishes_bit_identically(tmp_path):
    """SIGTERM to the process; SIGUSR1 to its whole group, DataLoader workers included (they ignore it: the
    main process finishes the batch it is loading). 60 steps on the built-in data, 2 validations."""
    args = TINY + ["--data", "builtin", "--steps", "60", "--workers", "2"]
    straight = run(ONE, args + ["--output", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    for signum, target in ((signal.SIGTERM, "launcher"), (signal.SIGUSR1, "group")):
        name = signal.Signals(signum).name
        code, out, err = stopped(ONE, args + ["--output", name], tmp_path, "  step 5  ", signum, target)
        assert code == 128 + signum, err[-2000:]
        assert "Traceback" not in err and "DataLoader worker" not in err, err[-2000:]
        assert f"{name}: finishing this step, then saving a checkpoint to resume from" in err
        at = load_state(tmp_path / name / "checkpoint-last.pt")["step"]
        assert 5 <= at < 60, "the signal must land mid-run"
        assert f"{name}: stopped at step {at} of 60; {name}/checkpoint-last.pt holds it (written " in out
        assert f"s after the signal). Continue with: python -m vitfast.train --output {name} --resume auto" in out
        again = run(ONE, args + ["--output", name, "--resume", "auto"], tmp_path)  # the same command, requeued
        assert again.returncode == 0 and f"at step {at}" in again.stdout, again.stderr[-2000:]
        same_weights(tmp_path / "straight" / "checkpoint-last.pt", tmp_path / name / "checkpoint-last.pt")


# Two ranks on the CPU (gloo). The validation of the built-in data 4 images at a time takes about a second:
# long enough for a signal sent as its first line prints to land in it.
RANKED = TINY + ["--data", "builtin", "--steps", "40", "--eval-every-steps", "20", "--eval-batch-size", "4"]


@pytest.mark.parametrize("sharded, signum, target, after", [
    (False, signal.SIGINT, "launcher", "  step 5  "),  # Ctrl-C at the terminal: torchrun passes it on
    pytest.param(False, signal.SIGTERM, "launcher", "validation (",  # in a validation: the ranks finish it, stop
                 marks=pytest.mark.long),  # after it (as fsdp-in-validation-sigusr1 does, sharded)
    (True, signal.SIGTERM, "rank1", "  step 5  "),  # one rank alone: the other stops at the same step
    (True, signal.SIGUSR1, "launcher", "validation ("),  # sharded, in a validation (torchrun told of SIGUSR1)
], ids=["ddp-ctrl-c", "ddp-in-validation", "fsdp-one-rank-max-restarts", "fsdp-in-validation-sigusr1"])
def test_under_torchrun_every_rank_stops_at_one_step_and_resume_auto_finishes_it(tmp_path, sharded, signum, target,
                                                                                  after):
    """With one rank alone signalled, torchrun sees its ranks exit and restarts them (--max-restarts): the same
    command, with --resume auto, continues the run to its end in the same torchrun."""
    port = 29800 + 40 * int(sharded) + signum
    args = RANKED + (["--fsdp"] if sharded else [])
    last = "checkpoint-last" + (".dcp" if sharded else ".pt")
    straight = run(torchrun(port), args + ["--output", "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    restarts = target == "rank1"
    launch = torchrun(port + 1)
    if restarts:
        launch = launch[:-2] + ["--max-restarts", "1", "-m", "vitfast.train"]
    elif signum == signal.SIGUSR1:  # torchrun passes on SIGUSR1 only when told to (the README's SLURM example)
        launch = launch[:-2] + ["--signals-to-handle", "SIGTERM,SIGINT,SIGUSR1", "-m", "vitfast.train"]
    code, out, err = stopped(launch, args + ["--output", "run"] + (["--resume", "auto"] if restarts else []), tmp_path,
                             after, signum, target)
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    said = re.search(rf"{name}: stopped at step (\d+) of 40; run/{last} holds it", out)
    assert said, (out[-2000:], err[-3000:])
    at = int(said[1])
    assert 5 <= at < 40, "the signal must land mid-run"
    assert "Continue with: the same torchrun command with --output run --resume auto" in out
    assert "vitfast/train" not in err, err[-3000:]  # no traceback through our code (torchrun prints its own)
    assert out.count("stopped at step") == 1 and "interrupted" not in err  # rank 0 says it, once
    if after == "validation (":
        assert at == 20, "the signal lands in step 20's validation: the ranks stop at its end"
    if restarts:
        assert code == 0 and f"resumed from run/{last} at step {at}" in out, err[-3000:]
    else:
        assert code != 0 and load_state(tmp_path / "run" / last)["step"] == at
        again = run(torchrun(port + 2), args + ["--output", "run", "--resume", "auto"], tmp_path)
        assert again.returncode == 0 and f"at step {at}" in again.stdout, again.stderr[-3000:]
    same_weights(tmp_path / "straight" / last, tmp_path / "run" / last)


def test_resume_auto_starts_over_a_run_killed_before_its_first_checkpoint(tmp_path):
    """SIGKILL (no handler can run: the OOM killer, a node lost) before any checkpoint: what is left cannot
    be continued, and refusing it would stop every requeue of the same command."""
    args = TINY + ["--data", "builtin", "--steps", "100", "--output", "run", "--resume", "auto"]
    code, out, _ = stopped(ONE, args, tmp_path, "  step 3  ", signal.SIGKILL)
    assert code == -signal.SIGKILL and not list((tmp_path / "run").glob("checkpoint-*"))
    assert (tmp_path / "run" / "config.yaml").exists()
    again = run(ONE, args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "--resume auto: run holds a run stopped before its first checkpoint, so nothing to continue: deleted it " \
           "(config.yaml, metrics.jsonl" in again.stdout
    assert load_state(tmp_path / "run" / "checkpoint-last.pt")["step"] == 100


def test_a_repeated_signal_changes_nothing_and_ctrl_c_after_it_quits_at_once():
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # asks: the step in progress goes on
        os.kill(os.getpid(), signal.SIGTERM)  # SLURM's and torchrun's copy of one stop
        assert stop.signum == signal.SIGTERM and stop.poll() and stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # the user at the terminal wants out now
            os.kill(os.getpid(), signal.SIGINT)
        assert not stop.at_boundary
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_under_torchrun_a_validation_is_not_stopped_by_one_rank_alone():
    """A rank that stopped its validation at once would leave the others waiting in its collectives."""
    stop = StopRequest(SimpleNamespace(enabled=True, is_main=False, side_group=None)).install()
    try:
        stop.safe = True
        os.kill(os.getpid(), signal.SIGUSR2)  # noted, not raised: poll() at the step's end decides
        assert stop.signum == signal.SIGUSR2 and not stop.at_boundary and stop.poll()
    finally:
        stop.restore()


@pytest.mark.parametrize("scontrol", ["works", "fails", "absent"])
def test_at_slurms_time_limit_the_saved_run_requeues_its_job(tmp_path, scontrol):
    """SIGUSR1 in a SLURM batch job (`#SBATCH --signal=USR1@SECONDS`): after the checkpoint, `scontrol requeue
    JOB`, as Lightning does. This machine has no SLURM: the `scontrol` here is a script that records how it
    is called (or fails, or is missing), so what is checked is the call and the line, not SLURM's requeue."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if scontrol != "absent":
        refuse = 'echo "Invalid job id specified" >&2; exit 1'
        does = f'echo "$@" > {tmp_path}/called' if scontrol == "works" else refuse
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{does}\n")
        (bin_dir / "scontrol").chmod(0o755)
    env = {**COMMAND_ENV, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train.sbatch",
           "PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}"}
    with open(tmp_path / "stderr.txt", "w") as errors:
        proc = subprocess.Popen(ONE + TINY + ["--data", "builtin", "--steps", "400", "--output", "run"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        for text in proc.stdout:
            if "  step 3  " in text:
                proc.send_signal(signal.SIGUSR1)
                break
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert "SIGUSR1: stopped at step" in out
    if scontrol == "works":
        assert (tmp_path / "called").read_text().split() == ["requeue", "4242"]
        assert "SLURM job 4242 requeued (scontrol requeue 4242): its script's --resume auto continues the run" in out
    else:
        why = "Invalid job id specified" if scontrol == "fails" else "no scontrol on this machine's PATH"
        assert f"SLURM job 4242 is not requeued (scontrol requeue 4242: {why}" in out, out[-1000:]
        assert "requeue it, or continue with: python -m vitfast.train --output run --resume auto" in out
