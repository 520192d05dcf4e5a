"""Throughput of vitfast.ops.float_quantize against torch's own casts and qtorch 0.3.0, and of
every quantizer kernel against the GPU's copy.

    python benchmarks/bench_quant.py [--size N] [--repeats R] [--device cpu|cuda|all] [--threads T] [--out FILE]

For formats (5,10) (fp16) and (8,7) (bf16), roundings nearest and stochastic, on 2^24 fp32 elements:
vitfast's time against `x.half().float()` / `x.bfloat16().float()` (the same nearest rounding by
torch's native, vectorised casts: the speed to match) and against qtorch.float_quantize with the same
rounding (the library vitfast replaces). On CUDA also against a device copy, the bandwidth roof.
GB/s counts the bytes the operation must move, 4 read + 4 written per element, for every row alike.

On CUDA a second table sweeps fp32 and bf16 inputs: float_quantize in four formats and every
rounding, scaled_cast to e4m3fn, e5m2 and int8 with a per-tensor and a per-row scale; each row's
bytes (input read, output written) per second against a copy of the same input (`x.clone()`).
"""
import argparse
import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from unittest import mock

import torch

from common import METHOD, git_commit, gpu_driver, input_sets, measure, write_table  # benchmarks/common.py
from vitfast.cli import first_line
from vitfast.ops import float_quantize, scaled_cast

FORMATS = [((5, 10), "fp16", lambda x: x.half().float()), ((8, 7), "bf16", lambda x: x.bfloat16().float())]
ROUNDINGS = ["nearest", "stochastic"]
# The GPU sweep: input dtypes, float_quantize formats and roundings, scaled_cast targets.
SWEEP_DTYPES = [torch.float32, torch.bfloat16]
SWEEP_FORMATS = [((5, 10), "fp16"), ((8, 7), "bf16"), ((4, 3), "e4m3"), ((5, 2), "e5m2")]
SWEEP_ROUNDINGS = ["nearest", "nearest_away", "stochastic"]
SWEEP_TARGETS = [torch.float8_e4m3fn, torch.float8_e5m2, torch.int8]
SWEEP_ROW = 768  # the per-row scale's row length (ViT-B's width)
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


def bench_sweep(n, repeats, device="cuda"):
    """Rows of the GPU sweep: each quantizer kernel against a copy of its input, inputs rotated past L2
    (`device` is "cuda" but for the script's own test)."""
    rows = []
    n -= n % SWEEP_ROW
    for dtype in SWEEP_DTYPES:
        sets = input_sets(lambda: (fresh_input(n, device).to(dtype),), device)
        size = sets[0][0].element_size()
        copy_ms = measure(lambda x: x.clone(), device, inputs=sets, repeats=repeats).median
        copy_gbps = 2 * size * n / (copy_ms * 1e-3) / 1e9
        name = str(dtype).removeprefix("torch.")

        def add(op, what, how, fn, out_size):
            ms = measure(fn, device, inputs=sets, repeats=repeats).median
            rate = (size + out_size) * n / (ms * 1e-3) / 1e9
            rows.append(dict(op=op, dtype=name, what=what, how=how, ms=ms, gbps=rate, copy_gbps=copy_gbps))
            print(f"  {op} {name} {what} {how}: {ms:.4g} ms, {rate / copy_gbps:.0%} of copy", flush=True)

        for (exp, man), fmt in SWEEP_FORMATS:
            for rounding in SWEEP_ROUNDINGS:
                add("float_quantize", f"({exp},{man}) {fmt}", rounding,
                    lambda x, e=exp, m=man, r=rounding: float_quantize(x, e, m, r), size)
        tensor_scale = torch.tensor(0.05, device=device)
        row_scales = torch.rand(n // SWEEP_ROW, device=device) + 0.01
        for target in SWEEP_TARGETS:
            what = str(target).removeprefix("torch.")
            add("scaled_cast", what, "per tensor", lambda x, t=target: scaled_cast(x, tensor_scale, t), 1)
            add("scaled_cast", what, f"per row of {SWEEP_ROW}",
                lambda x, t=target: scaled_cast(x.view(-1, SWEEP_ROW), row_scales, t), 1)
    return rows


def sweep_table(rows):
    head = ["op", "input", "format / target", "rounding / scale", "ms", "GB/s", "copy GB/s", "% of copy",
            f"≥{GOAL_COPY:.0%}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        share = r["gbps"] / r["copy_gbps"]
        lines.append("| " + " | ".join([r["op"], r["dtype"], r["what"], r["how"], f"{r['ms']:.4g}",
                                         f"{r['gbps']:.0f}", f"{r['copy_gbps']:.0f}", f"{share:.0%}",
                                         mark(share >= GOAL_COPY)]) + " |")
    return "\n".join(lines)


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

    rows, copies, sweep = [], {}, []
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
        if device == "cuda":
            sweep = bench_sweep(args.size, args.repeats)
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
    if sweep:
        text += ("\n## Every quantizer kernel on the GPU against a copy of its input\n\n"
                 f"{args.size - args.size % SWEEP_ROW} elements; GB/s = (input + output bytes) per element / time; "
                 "inputs rotated over sets larger than twice the L2 cache.\n\n" + sweep_table(sweep) + "\n")
    print()
    write_table(text, args.out)
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
