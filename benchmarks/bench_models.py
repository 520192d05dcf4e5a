"""End-to-end images/s of the models: vitfast's fused backend against timm eager (SDPA) and
torch.compile(timm), training and inference in bf16; FP16_16 / FP16_32 inference on lp_matmul against
plain fp16 and against the fake-quantized emulation; FP8 / INT8 inference (the FP8 chain; Linear8: torch._scaled_mm,
torch._int_mm) against bf16 and against the emulation; peak memory per image. One process, one GPU.

    python benchmarks/bench_models.py [--models M ...] [--batch-sizes 256 512 1024] [--max-autotune]
                                      [--no-train] [--no-lowp] [--no-8bit] [--repeats R] [--out FILE]
    python benchmarks/bench_models.py --device cpu --quick     # a smoke run of every code path (seconds)
    VITFAST_FUSED_GEMM=0 python benchmarks/bench_models.py ...  # linear_gelu/_residual on cuBLAS + ATen instead
    python benchmarks/bench_models.py --processes 3 ...         # the same run in 3 fresh processes, summarised

Timing: benchmarks/common.py's measure(launch="host"): CUDA events around whole calls launched from an
idle GPU (the host's share of a step counts, as in a user's loop), after warm-up calls, the median of
at least 10 samples (the spread, min to max, is printed beside it); inputs are random (never zeros) and drawn afresh per case. Training = one
forward, backward and AdamW step under bf16 autocast (fp32 master weights), for every variant alike.
Inference runs the model in bf16 (its parameters cast), eval mode, no_grad. Models timm lacks
(dvt_t2t_vit_14) use vitfast's own model with the "sdpa" backend as the eager baseline. torch.compile
uses mode "default" (and "max-autotune" with --max-autotune). Peak memory: torch.cuda.max_memory_allocated
over the timed calls, less what was allocated before, per image.

A host-bound model's rate moves from one process to the next far more than within one (ViT-Ti on the
backend, H200: 0.85-1.30x timm eager in five processes, models_h200.md), so --processes N runs the whole
measurement in N fresh processes and reports, per row, the median over them of each process's median,
the range of those medians, and the median (and range) of the per-process ratios to the first variant,
which each process timed beside it.
"""
import argparse
import os
import sys
import warnings

import torch

import common  # benchmarks/common.py

MODELS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
          "deit_small_patch16_224", "dvt_t2t_vit_14"]
QUICK = dict(models=["vit_tiny_patch16_224", "dvt_t2t_vit_14"], batch_sizes=[2], img_size=32, depth=1, repeats=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny models and batches: checks every path, times nothing useful")
    p.add_argument("--max-autotune", action="store_true", help="also torch.compile(mode='max-autotune')")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--no-lowp", action="store_true")
    p.add_argument("--no-8bit", action="store_true", help="skip the FP8 / INT8 (Linear8) inference rows")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=None, help="write the markdown table here as well")
    p.add_argument("--processes", type=int, default=1, help="run the measurement in N fresh processes, summarised")
    p.add_argument("--rows-json", help=argparse.SUPPRESS)  # a --processes child's rows, for its parent
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error(f"--processes: expected a count of at least 1, got {args.processes}")
    return args


def without(argv, *options):
    """argv with each of `options` and its value removed (as "--opt value" or "--opt=value")."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not any(a.startswith(o + "=") for o in options):
            out.append(a)
    return out


def in_processes(argv, n):
    """The rows of this script's run with argv in each of n fresh processes (their tables printed as
    they come)."""
    import json
    import subprocess
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = os.path.join(tmp, f"{i}.json")
            print(f"## process {i + 1} of {n}", flush=True)
            subprocess.run([sys.executable, os.path.abspath(__file__), *without(argv, "--processes", "--out"),
                            "--rows-json", path], check=True)
            with open(path) as f:
                runs.append([tuple(r) for r in json.load(f)])
    return runs


def summarise(runs):
    """One row per (model, batch, mode, variant) of the first run: (model, batch, mode, label, median
    img/s over the processes, min and max of the processes' medians, median ratio to the first variant
    of the same process, min and max ratio, the first run's peak MiB/img or its failure)."""
    import statistics

    def ratios(rows):
        out = {}
        for r in rows:
            ref = first_rate(r, rows)
            out[r[:4]] = r[4] / ref if r[4] and ref else None
        return out

    per_run = [({r[:4]: r for r in rows}, ratios(rows)) for rows in runs]
    out = []
    for row in runs[0]:
        key = row[:4]
        ips = [by[key][4] for by, _ in per_run if key in by and by[key][4]]
        rs = [rt[key] for _, rt in per_run if rt.get(key)]
        if not ips:
            out.append((*key, None, None, None, None, None, None, row[8]))
            continue
        out.append((*key, statistics.median(ips), min(ips), max(ips),
                    statistics.median(rs) if rs else None, min(rs, default=None), max(rs, default=None), row[8]))
    return out


def failed_row(row):
    """A variant that did not run: its failure where the numbers would be."""
    return f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[-1]} | | | |"


def format_summary(row):
    model, batch, mode, label, ips, lo, hi, ratio, rlo, rhi, mem = row
    if ips is None:
        return failed_row(row)
    rat = f"{ratio:.2f}x ({rlo:.2f}-{rhi:.2f}x)" if ratio else ""
    return f"| {model} | {batch} | {mode} | {label} | {ips:,.0f} | {lo:,.0f}-{hi:,.0f} | {rat} | {mem:.1f} |"


class Timer:
    def __init__(self, device, warmup, repeats):
        self.device, self.warmup, self.repeats = device, warmup, repeats

    def __call__(self, fn):
        """(median ms, min ms, max ms, peak bytes above the baseline) of fn()."""
        cuda = self.device == "cuda"
        for _ in range(self.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t = common.measure(fn, self.device, repeats=self.repeats, warmup=0, launch="host")
        peak = torch.cuda.max_memory_allocated() - base if cuda else 0
        return t.median, t.low, t.high, peak


def build(name, source, kw):
    """A model from timm or vitfast (None when the source lacks it), on the CPU in fp32."""
    import vitfast
    from vitfast.models import dvt, t2t_vit  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    if source == "timm":
        import timm

        if not timm.is_model(name):
            return None
        return timm.create_model(name, pretrained=False, **kw)
    return vitfast.create_model(name, **kw)


def variants(name, kw, args):
    """[(label, model factory, backend or None, compile mode or None)] for the bf16 comparisons."""
    import timm

    base = ("timm eager (SDPA)", lambda: build(name, "timm", kw), None, None) if timm.is_model(name) else \
        ("vitfast sdpa (eager baseline)", lambda: build(name, "vitfast", kw), "sdpa", None)
    out = [base]
    if not args.no_compile:
        out.append((f"torch.compile({base[0].split(' ')[0]})", base[1], base[2], "default"))
        if args.max_autotune:
            out.append((f"torch.compile({base[0].split(' ')[0]}, max-autotune)", base[1], base[2], "max-autotune"))
    out.append(("vitfast backend", lambda: build(name, "vitfast", kw), "vitfast", None))
    if not args.no_compile:  # our ops are custom ops: compile traces them with no graph break
        out.append(("torch.compile(vitfast backend)", lambda: build(name, "vitfast", kw), "vitfast", "default"))
    return out


def prepare(factory, backend, compile_mode, device, dtype):
    from vitfast.layers import set_model_backend

    model = factory()
    if backend is not None:
        set_model_backend(model, backend)
    model = model.to(device=device, dtype=dtype)
    run = torch.compile(model, mode=compile_mode) if compile_mode else model
    return model, run


def images(batch, size, device, dtype=torch.float32):
    return torch.randn(batch, 3, size, size, device=device).to(dtype)


def logits_sum(out):
    return sum(o.float().sum() for o in out) if isinstance(out, (list, tuple)) else out.float().sum()


def bench_inference(run, x):
    def step():
        with torch.no_grad():
            run(x)
    return step


def bench_training(model, run, x, device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = logits_sum(run(x))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(rows, timer, model_name, batch, mode, label, make_step, device):
    try:
        ms, lo, hi, peak = timer(make_step())
        rows.append((model_name, batch, mode, label, batch / ms * 1e3, lo, hi, ms, peak / batch / 2**20))
    except torch.cuda.OutOfMemoryError:
        rows.append((model_name, batch, mode, label, None, None, None, None, "OOM"))
    except Exception as e:  # a variant that cannot run is reported, not fatal
        rows.append((model_name, batch, mode, label, None, None, None, None, f"{type(e).__name__}: {str(e)[:60]}"))
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()
    print(format_row(rows[-1], rows), flush=True)


def lowp_variants(name, kw):
    """FP16 inference: plain fp16; every nn.Linear on lp_matmul and nothing else changed (route_lowp:
    FP16_16 in an fp16 model, FP16_32 in an fp32 model); the full recipes (convert_ptq, which on a GPU
    puts its linear layers on lp_matmul and keeps the emulation's other rounding points, including the
    eager attention core) and the recipes' fake-quantized emulation (prepare_qat, eval)."""
    from vitfast.quant import convert_ptq, prepare_qat, route_lowp

    def plain():
        return build(name, "vitfast", kw).half().eval()

    out = [("plain fp16 (vitfast sdpa)", plain, torch.float16),
           ("FP16_16 route_lowp (fp16 model)", lambda: route_lowp(plain(), "FP16_16"), torch.float16),
           ("FP16_32 route_lowp (fp32 model)", lambda: route_lowp(build(name, "vitfast", kw).eval(), "FP16_32"),
            torch.float32)]
    for recipe in ("FP16_16", "FP16_32"):
        out.append((f"{recipe} convert_ptq (lp_matmul)", lambda r=recipe: convert_ptq(build(name, "vitfast", kw), r), torch.float32))
        out.append((f"{recipe} fake-quant emulation", lambda r=recipe: prepare_qat(build(name, "vitfast", kw), r).eval(),
                    torch.float32))
    return out


def eight_bit_variants(name, kw, device):
    """Real FP8 / INT8 inference against the bf16 vitfast backend (the first row): the FP8 chain
    (convert_fp8: e4m3 between the layers, fp8_linear and layer_norm_fp8), and Linear8 layers
    (convert_ptq: torch._scaled_mm / torch._int_mm, static scales calibrated on one random batch, or
    dynamic) beside the same recipe's emulation (convert_ptq(..., emulate=True)); every model in bf16.
    The label names the path that ran (the chain's, vitfast.quant.quantized_paths)."""
    from vitfast.quant import convert_ptq, quantized_paths
    from vitfast.quant.fp8_chain import chain_path, convert_fp8, convertible_blocks

    size = kw.get("img_size", 224)

    def fp32():
        return build(name, "vitfast", kw).to(device).eval()

    def ptq(recipe, **options):
        def make():
            m = convert_ptq(fp32(), recipe, **options).to(torch.bfloat16)
            paths = ", ".join(f"{n}x {p}" for p, n in quantized_paths(m, device, torch.bfloat16).items())
            return m, paths
        return make

    def chain():
        m = convert_fp8(fp32(), [images(8, size, device)])
        return m, f"{len(m.fp8_blocks)} blocks on {chain_path(device) or 'ATen composites (emulation)'}"

    out = [("bf16 (vitfast backend)", lambda: (fp32().to(torch.bfloat16), ""))]
    with torch.device("meta"):  # the architecture only, to ask whether it has plain pre-norm blocks
        plain = convertible_blocks(build(name, "vitfast", kw))[0]
    if plain:  # not DVT's, T2T's
        out.append(("FP8 chain (convert_fp8)", chain))
    for recipe in ("FP8_E4M3_SCALED", "INT8"):
        calib = [images(8, size, device)]
        out.append((f"{recipe} Linear8, static scales", ptq(recipe, calib_data=calib)))
        out.append((f"{recipe} Linear8, dynamic scales", ptq(recipe)))
        out.append((f"{recipe} emulation", ptq(recipe, calib_data=calib, emulate=True)))
    return out


def first_rate(row, rows):
    """img/s of the first variant that ran for row's model, batch and mode: what "vs first" divides by."""
    return next((r[4] for r in rows if r[:3] == row[:3] and r[4]), None)


def format_row(row, rows):
    model, batch, mode, label, ips, lo, hi, ms, mem = row
    if ips is None:
        return failed_row(row)
    ref = first_rate(row, rows)
    ratio = f"{ips / ref:.2f}x" if ref else ""
    spread = f"{batch / hi * 1e3:,.0f}-{batch / lo * 1e3:,.0f}"
    return f"| {model} | {batch} | {mode} | {label} | {ips:,.0f} | {spread} | {ratio} | {mem:.1f} |"


def header(device):
    return [f"{k}: {v}" for k, v in common.environment(device).items()] + [
        "timing: CUDA events around whole calls launched from an idle GPU (host time included), median and "
        "min-max of >= 10 samples after warm-up"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_models.py needs a CUDA GPU (none is visible). For a smoke run of every code path on the "
                 "CPU: python benchmarks/bench_models.py --device cpu --quick")
    import vitfast

    if args.device == "cuda" and not vitfast.has_cuda_kernels():
        sys.exit("vitfast was built without its CUDA kernels: rebuild it with a CUDA toolkit")
    if args.processes > 1:
        return write_summary(args, in_processes(argv, args.processes))
    kw, sizes = {}, args.batch_sizes
    if args.quick:
        args.models, sizes, args.repeats, args.warmup = QUICK["models"], QUICK["batch_sizes"], QUICK["repeats"], 1
        kw = dict(img_size=QUICK["img_size"], depth=QUICK["depth"], num_classes=10)
    device = args.device
    warnings.filterwarnings("ignore", message="vitfast backend: attention falls back")
    timer = Timer(device, args.warmup, args.repeats)
    rows = []
    print("| model | batch | mode | variant | img/s (median) | img/s (min-max) | vs first | peak MiB/img |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model_kw = dict(kw)
        if name == "dvt_t2t_vit_14" and args.quick:
            model_kw["depth"] = 1
        size = model_kw.get("img_size", 224)
        for batch in sizes:
            for label, factory, backend, mode in variants(name, model_kw, args):
                if args.quick and mode is not None:
                    continue  # compiling takes minutes: not in a smoke run
                model, run = prepare(factory, backend, mode, device, torch.bfloat16)
                model.eval()
                x = images(batch, size, device, torch.bfloat16)
                measure(rows, timer, name, batch, "inference bf16", label, lambda: bench_inference(run, x), device)
                if not args.no_train:
                    model, run = prepare(factory, backend, mode, device, torch.float32)
                    model.train()
                    x = images(batch, size, device)
                    measure(rows, timer, name, batch, "training bf16 autocast", label,
                            lambda: bench_training(model, run, x, device), device)
                model = run = None  # free before the next variant
            if not args.no_lowp:
                for label, factory, dtype in lowp_variants(name, model_kw):
                    model = factory().to(device).eval()
                    x = images(batch, size, device, dtype)
                    measure(rows, timer, name, batch, "inference fp16 formats", label,
                            lambda: bench_inference(model, x), device)
                    model = None
            if not args.no_8bit:
                for label, factory in eight_bit_variants(name, model_kw, device):
                    model, paths = factory()
                    x = images(batch, size, device, torch.bfloat16)
                    measure(rows, timer, name, batch, "inference 8-bit formats", label + (f" [{paths}]" if paths else ""),
                            lambda: bench_inference(model, x), device)
                    model = None
    columns = "| model | batch | mode | variant | img/s (median) | img/s (min-max) | vs first | peak MiB/img |"
    publish(args.out, header(device), [columns] + [format_row(r, rows) for r in rows])
    if args.rows_json:
        import json

        with open(args.rows_json, "w") as f:
            json.dump(rows, f)
    return rows


def write_summary(args, runs):
    n = len(runs)
    publish(args.out, header(args.device) + [f"processes: {n}, each a fresh one timing every variant (--processes)"],
            [f"| model | batch | mode | variant | img/s (median of {n} processes) | process medians (min-max) | "
             "vs first: median (min-max) of the processes' ratios | peak MiB/img |"]
            + [format_summary(r) for r in summarise(runs)])
    return runs


def publish(out, lines, table):
    """The table under its header lines, printed and, with out, written there."""
    text = "\n".join(["# bench_models.py", ""] + [f"- {line}" for line in lines] + ["", table[0], "|---" * 8 + "|"]
                     + table[1:]) + "\n"
    print()
    common.write_table(text, out)


if __name__ == "__main__":
    main()
