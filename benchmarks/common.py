"""What every benchmark script shares: one way of timing the GPU (vitfast.kernels.timing, which the
package's tuner uses too), and the provenance of a result table: date, commit (flagged when the tree has
uncommitted changes), torch and CUDA versions, GPU and driver."""
import datetime
import os
import statistics
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vitfast.kernels.timing import (METHOD, MIN_SAMPLES, Timing, input_sets, l2_bytes, measure,  # noqa: E402,F401
                                    tensor_bytes)


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
    from vitfast.kernels.check_gpu import driver_version
    return driver_version()


def kernel_fingerprints():
    """The built extension's kernel source fingerprints, "family=hex;..." (vitfast.kernel_fingerprints):
    what a table measured, so the dispatch data knows when its kernels change."""
    import vitfast  # noqa: F401  (loads the extension)
    return torch.ops.vitfast.kernel_fingerprints()


def environment(device):
    """{date, commit, torch, CUDA, GPU[, driver], kernels} for a result table's header."""
    env = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}", "commit": git_commit(),
           "torch": torch.__version__, "CUDA": torch.version.cuda or "none"}
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env["GPU"] = f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)"
        env["driver"] = gpu_driver()
    else:
        env["GPU"] = f"none (CPU: {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    env["kernels"] = kernel_fingerprints()
    return env


def train_interval_rate(run_dir):
    """The median of a vitfast.train run's per-interval images/s (its metrics.jsonl's train lines, each
    measured after the device caught up), the first interval (the warm-up) left out."""
    import json

    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rates = [r["images_per_second"] for r in map(json.loads, f) if r["kind"] == "train"]
    return statistics.median(rates[1:] or rates)


def write_table(text, path=None, echo=True):
    """Print a result table (unless echo=False) and, when a path is given, write it there (its folder made
    if need be)."""
    if echo:
        print(text)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
