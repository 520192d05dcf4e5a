"""What every benchmark script shares: one timing loop and the provenance of a result table.

Timing: CUDA events around each call on a GPU (after a synchronize, so earlier work is not counted),
the host clock on a CPU; warm-up calls first; every sample is returned, so a script can quote the
median and the spread. Provenance: date, commit (flagged when the tree has uncommitted changes), torch
and CUDA versions, GPU and driver."""
import datetime
import os
import subprocess
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sample_ms(fn, device, repeats, warmup=3):
    """Milliseconds of each of `repeats` calls of fn() after `warmup` untimed ones."""
    cuda = str(device).startswith("cuda")
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return times


def _run(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit():
    """Short hash of HEAD, "(with uncommitted changes)" when tracked files differ from it. VITFAST_COMMIT
    overrides it: a copy of the tree on a GPU machine may carry an older .git than the files it runs."""
    if os.environ.get("VITFAST_COMMIT"):
        return os.environ["VITFAST_COMMIT"] + " (from VITFAST_COMMIT)"
    rev = _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return rev + (" (with uncommitted changes)" if dirty else "")


def gpu_driver():
    return (_run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines() or ["unknown"])[0]


def environment(device):
    """{date, commit, torch, CUDA, GPU[, driver]} for a result table's header."""
    env = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}", "commit": git_commit(),
           "torch": torch.__version__, "CUDA": torch.version.cuda or "none"}
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env["GPU"] = f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)"
        env["driver"] = gpu_driver()
    else:
        env["GPU"] = f"none (CPU: {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return env
