"""One GPU call that measures and decides the vitfast backend's dispatch for this GPU kind.

    python benchmarks/tune.py                    # on an H100 / H200, a few minutes (budget: 8)
    python benchmarks/tune.py --out-dir DIR --data-dir DIR   # elsewhere than the repository's folders

Runs bench_kernels.py (every Hopper configuration built for fc1 + GELU and fc2 / proj + residual at
the ViT widths, layer_norm with and without the residual; inference and training; bf16) and
bench_attention.py (the ViT shapes, with and without a bias, forward and forward + backward, against
each SDPA backend) in this process, writes their tables as <out-dir>/kernels_<gpu>.md and
attention_<gpu>.md, then write_dispatch.py on the two: <data-dir>/<gpu name>.json is rewritten and
every choice that changed is printed. A GPU kind without a data file runs the library path until this
has run on one.
"""
import argparse
import os
import re
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
import bench_attention  # noqa: E402
import bench_kernels  # noqa: E402
import write_dispatch  # noqa: E402
from vitfast.kernels.dispatch import DATA_DIR  # noqa: E402

BUDGET_MIN = 8.0


def gpu_kind(name):
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200': the result tables' suffix."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.path.join(ROOT, "benchmarks", "results"), help="where the tables go")
    p.add_argument("--data-dir", default=DATA_DIR, help="where the dispatch data goes")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("tune.py needs a CUDA GPU (an H100 or H200): it times the kernels it decides between")
    kind = gpu_kind(torch.cuda.get_device_name())
    os.makedirs(args.out_dir, exist_ok=True)
    kernels = os.path.join(args.out_dir, f"kernels_{kind}.md")
    attention = os.path.join(args.out_dir, f"attention_{kind}.md")
    start = time.time()
    bench_kernels.main(["--out", kernels])
    print(f"tune.py: kernels timed in {(time.time() - start) / 60:.1f} min", flush=True)
    if bench_attention.main(["--out", attention]) not in (0, None):
        raise SystemExit("tune.py: bench_attention.py failed; the dispatch data is unchanged")
    write_dispatch.main([kernels, attention, "--out-dir", args.data_dir])
    minutes = (time.time() - start) / 60
    print(f"tune.py: {minutes:.1f} min in all" + (f", over the {BUDGET_MIN:g}-minute budget" if minutes > BUDGET_MIN
                                                   else ""))


if __name__ == "__main__":
    main()
