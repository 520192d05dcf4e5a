"""Throughput of vitfast.ops.float_quantize against torch's own casts and qtorch 0.3.0.

    python benchmarks/bench_quant.py [--size N] [--repeats R] [--device cpu|cuda|all] [--threads T] [--out FILE]

For formats (5,10) (fp16) and (8,7) (bf16), roundings nearest and stochastic, on 2^24 fp32 elements:
vitfast's time against `x.half().float()` / `x.bfloat16().float()` (the same nearest rounding by
torch's native, vectorised casts: the speed to match) and against qtorch.float_quantize with the same
rounding (the library vitfast replaces). On CUDA also against a device copy, the bandwidth roof.
GB/s counts the bytes the operation must move, 4 read + 4 written per element, for every row alike.
"""
import argparse
import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from unittest import mock

import torch

from common import METHOD, git_commit, gpu_driver, measure  # benchmarks/common.py
from vitfast.cli import first_line
from vitfast.ops import float_quantize

FORMATS = [((5, 10), "fp16", lambda x: x.half().float()), ((8, 7), "bf16", lambda x: x.bfloat16().float())]
ROUNDINGS = ["nearest", "stochastic"]
WARMUP = 2
# Targets, checked by goals(): CPU speedup over qtorch, CPU time over torch's cast, GPU share of copy bandwidth.
GOAL_QTORCH, GOAL_CAST, GOAL_COPY = 5.0, 1.5, 0.80


def load_qtorch(want_cuda):
    """(qtorch.quant or None, the devices it runs on, note or None). Importing it JIT-compiles its C++
    extension (and, with CUDA visible, its CUDA kernels: minutes), so CUDA is hidden when only the CPU
    is benchmarked, and a failed CUDA build falls back to qtorch on CPU only."""
    note = None
    for cuda in ([True, False] if want_cuda else [False]):
        try:
            with mock.patch("torch.cuda.is_available", return_value=cuda):
                import qtorch.quant as q
            return q, ({"cpu", "cuda"} if cuda else {"cpu"}), note
        except ModuleNotFoundError as e:
            return None, set(), f"qtorch: not measured ({e})"
        except Exception as e:  # its extension did not build; Python drops the half-imported module
            note = f"qtorch{' on CUDA' if cuda else ''}: not measured ({type(e).__name__}: {first_line(e)})"
    return None, set(), note


def fresh_input(n, device):
    # New random data for every case, so no case times another's cached output; zeros replaced so no
    # kernel can take a fast path on them.
    x = torch.randn(n, device=device)
    return x.masked_fill_(x == 0, 1.0)


def time_ms(fn, device, repeats):
    """Median milliseconds of fn() over `repeats` calls after WARMUP calls."""
    return measure(fn, device, repeats=repeats, warmup=WARMUP).median


def gbps(n, ms):
    return 8 * n / (ms * 1e-3) / 1e9


def mark(ok):
    return "PASS" if ok else "MISS"


def bench_device(device, n, repeats, q):
    """Rows (dicts) for one device, plus the copy bandwidth on CUDA (None on CPU)."""
    copy_ms = None
    if device == "cuda":
        x = fresh_input(n, device)
        copy_ms = time_ms(lambda: x.clone(), device, repeats)
    rows = []
    for (exp, man), cast_name, cast in FORMATS:
        x = fresh_input(n, device)
        cast_ms = time_ms(lambda: cast(x), device, repeats)
        for rounding in ROUNDINGS:
            x = fresh_input(n, device)
            row = dict(device=device, fmt=f"({exp},{man})", cast_name=cast_name, rounding=rounding,
                       cast_ms=cast_ms, copy_ms=copy_ms, qtorch_ms=None)
            row["ms"] = time_ms(lambda: float_quantize(x, exp, man, rounding), device, repeats)
            if q is not None:
                try:
                    row["qtorch_ms"] = time_ms(lambda: q.float_quantize(x, exp, man, rounding), device, repeats)
                except Exception as e:  # e.g. qtorch built without its CUDA kernels
                    print(f"  qtorch {device} {rounding}: {type(e).__name__}: {first_line(e)}")
            rows.append(row)
            print(f"  {device} ({exp},{man}) {rounding}: {row['ms']:.4g} ms", flush=True)
    return rows, copy_ms


def goals(row):
    out = []
    if row["device"] == "cpu":
        if row["qtorch_ms"] is not None:
            out.append(f"≥{GOAL_QTORCH:g}× qtorch {mark(row['qtorch_ms'] / row['ms'] >= GOAL_QTORCH)}")
        if row["rounding"] == "nearest":
            out.append(f"≤{GOAL_CAST:g}× cast {mark(row['ms'] / row['cast_ms'] <= GOAL_CAST)}")
    else:
        out.append(f"≥{GOAL_COPY:.0%} copy BW {mark(row['copy_ms'] / row['ms'] >= GOAL_COPY)}")
    return "; ".join(out) or "-"


def table(rows, n):
    head = ["device", "format", "rounding", "vitfast ms", "vitfast GB/s", "torch cast", "cast ms",
            "qtorch ms", "speedup vs qtorch", "vitfast / cast time", "% of copy BW", "goals"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        q = r["qtorch_ms"]
        cells = [r["device"], r["fmt"], r["rounding"], f"{r['ms']:.4g}", f"{gbps(n, r['ms']):.1f}",
                 f"x.{'half' if r['cast_name'] == 'fp16' else 'bfloat16'}().float()", f"{r['cast_ms']:.4g}",
                 "-" if q is None else f"{q:.4g}", "-" if q is None else f"{q / r['ms']:.1f}×",
                 f"{r['ms'] / r['cast_ms']:.2f}×",
                 "-" if r["copy_ms"] is None else f"{r['copy_ms'] / r['ms']:.0%}", goals(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info(load_before):
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # The load average says whether other work shared the cores while this ran.
    info = [f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"1-min load average {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after"]
    if torch.cuda.is_available():
        info.append(f"GPU: {torch.cuda.get_device_name()}, driver {gpu_driver()}")
    else:
        info.append("GPU: none")
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2**24, help="elements (fp32) per tensor")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per case (median reported)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help="all: CPU, and CUDA if present")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as Markdown here")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu", "cuda"]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            p.error("--device cuda: no CUDA device")
        devices = ["cpu"]
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]

    q, q_devices, note = load_qtorch("cuda" in devices)
    notes = [note] if note else []
    if note:
        print(note)
    qver = importlib.metadata.version("qtorch") if q is not None else "absent"

    rows, copies = [], {}
    for device in devices:
        # Without its CUDA build, qtorch would run its CPU loop on device pointers: never call it there.
        try:
            r, copy_ms = bench_device(device, args.size, args.repeats, q if device in q_devices else None)
        except (RuntimeError, NotImplementedError) as e:  # e.g. vitfast built without its CUDA kernels
            notes.append(f"{device}: not measured ({type(e).__name__}: {first_line(e)})")
            print(notes[-1])
            continue
        rows += r
        if copy_ms is not None:
            copies[device] = copy_ms
    for device, ms in copies.items():
        notes.append(f"{device} copy (x.clone()): {ms:.4g} ms, {gbps(args.size, ms):.0f} GB/s")

    header = [f"# float_quantize throughput: {args.size} fp32 elements",
              f"- timing: {METHOD} (on a GPU; the host clock on the CPU)",
              "", *(f"- {line}" for line in machine_info(load_before)),
              f"- torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, qtorch {qver}",
              f"- vitfast commit {git_commit()}",
              f"- date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- GB/s = 8 bytes (fp32 read + write) per element / time. Goals: CPU nearest ≥{GOAL_QTORCH:g}× "
              f"qtorch and ≤{GOAL_CAST:g}× the torch cast's time; stochastic ≥{GOAL_QTORCH:g}× qtorch; "
              f"GPU ≥{GOAL_COPY:.0%} of copy bandwidth.",
              *(f"- {n}" for n in notes), ""]
    text = "\n".join(header) + "\n" + table(rows, args.size) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
