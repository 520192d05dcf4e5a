"""Fused attention at ViT shapes: vitfast.ops.attention against F.scaled_dot_product_attention under
each SDPA backend that runs (flash, efficient, cuDNN, each named), FlashAttention-4 where it is
installed (the flash-attn-4 wheel, CuTe DSL kernels; no additive bias) and plain PyTorch (q kᵀ,
softmax, p v), forward and forward+backward, with and without an additive (B, H, N, N) bias, in one
process. FlashAttention-4 is a peer in the table, not a choice of the dispatch data (the tuner,
vitfast.kernels.tune, weighs ours against the SDPA backends, which the backend can call).

    python benchmarks/bench_attention.py --out benchmarks/results/attention_h200.md
    python benchmarks/bench_attention.py --shapes ViT-B/16         # one shape of SHAPES
    python benchmarks/bench_attention.py --device cpu --quick      # smoke run, seconds, no GPU

Times: benchmarks/common.py's measure() (common.METHOD, named in the table's header). TFLOP/s counts 4 B H N² d per forward and 2.5 times
that for the backward (FlashAttention's convention); bandwidth counts the bytes of q, k, v and o
(and the bias) read or written once (forward+backward: also dO, dq, dk, dv and dbias), over the
measured time. "vs best SDPA" is the best SDPA backend's time over this row's (above 1: faster).
"""
import argparse
import importlib.metadata
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vitfast  # noqa: E402
from vitfast.cli import first_line  # noqa: E402
from vitfast.kernels.tune import ATTENTION_SHAPES  # noqa: E402
from vitfast.ops import attention, attention_ref  # noqa: E402
from common import METHOD, environment, input_sets, measure, write_table  # noqa: E402  (benchmarks/common.py)

SHAPES = ATTENTION_SHAPES  # (label, B, H, N, d): those the tuner times for the dispatch
QUICK_SHAPES = [("smoke", 2, 2, 65, 64)]


def sdpa_backends():
    """(name, SDPBackend) for each SDPA backend this torch knows."""
    from torch.nn.attention import SDPBackend

    names = [("sdpa-flash", "FLASH_ATTENTION"), ("sdpa-efficient", "EFFICIENT_ATTENTION"),
             ("sdpa-cudnn", "CUDNN_ATTENTION")]
    return [(n, getattr(SDPBackend, a)) for n, a in names if hasattr(SDPBackend, a)]


def flash_attention_4():
    """(f(q, k, v, bias) on FlashAttention-4's flash_attn_func, its version), or (None, why not)."""
    try:
        from flash_attn.cute import __version__, flash_attn_func
    except Exception as e:  # not installed, or its CUDA libraries (nvidia-cutlass-dsl-libs-cu13) missing
        return None, f"not available ({first_line(e)[:60]})"

    def f(q, k, v, b):
        if b is not None:
            raise NotImplementedError("no additive bias")
        # (B, H, N, d) views of (B, N, H, d) memory, as FlashAttention takes them
        out, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return f, wheel_version("flash-attn-4", __version__)


def wheel_version(dist, fallback):
    """The installed distribution's version: flash_attn.cute.__version__ says 0.0.0 in the 4.0.0b36 wheel."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def make_fns(device):
    """name -> f(q, k, v, bias) for every implementation timed."""
    fns = {"vitfast": lambda q, k, v, b: attention(q, k, v, b)}
    if device == "cuda":
        from torch.nn.attention import sdpa_kernel

        for name, backend in sdpa_backends():
            def f(q, k, v, b, backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=b)
            fns[name] = f
        fa4, _ = flash_attention_4()
        if fa4 is not None:
            fns["flash-attn-4"] = fa4
    else:
        fns["sdpa"] = lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b)
    fns["pytorch"] = lambda q, k, v, b: attention_ref(q, k, v, b, upcast=False)
    return fns


def inputs(B, H, N, d, dtype, device, with_bias, grad):
    """q, k, v as strided views of one fused qkv projection (the layout the models hand over)."""
    qkv = torch.randn(B, N, 3, H, d, device=device, dtype=dtype)
    q, k, v = (t.detach().requires_grad_(grad) for t in qkv.permute(2, 0, 3, 1, 4).unbind(0))
    bias = torch.randn(B, H, N, N, device=device, dtype=dtype).requires_grad_(grad) if with_bias else None
    return q, k, v, bias


def bench_case(fns, repeats, B, H, N, d, dtype, device, with_bias):
    rows = {}
    esize = torch.finfo(dtype).bits // 8
    flops = 4 * B * H * N * N * d
    io = 4 * B * H * N * d * esize + (B * H * N * N * esize if with_bias else 0)
    for mode in ("fwd", "fwd+bwd"):
        sets = input_sets(lambda: inputs(B, H, N, d, dtype, device, with_bias, grad=mode != "fwd"), device)
        times = time_mode(fns, repeats, mode, sets, device)
        for name, ms in times.items():
            if isinstance(ms, str):
                rows[(mode, name)] = ms
                continue
            fl = flops * (3.5 if mode != "fwd" else 1.0)
            nbytes = io * (2 if mode != "fwd" else 1)
            rows[(mode, name)] = (ms, fl / ms / 1e9, nbytes / ms / 1e6)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def time_mode(fns, repeats, mode, sets, device):
    """name -> median ms of the forward ("fwd") or forward+backward over the input sets, or "n/a: why"."""
    dout = torch.randn_like(sets[0][0])
    times = {}
    for name, f in fns.items():
        if mode == "fwd":
            def run(q, k, v, bias, f=f):
                with torch.no_grad():
                    f(q, k, v, bias)
        else:
            def run(q, k, v, bias, f=f):
                leaves = [t for t in (q, k, v, bias) if t is not None]
                torch.autograd.grad(f(q, k, v, bias), leaves, dout)
        try:
            run(*sets[0])
            times[name] = measure(run, device, sets, repeats).median
        except (RuntimeError, ValueError, NotImplementedError, AssertionError) as e:  # AssertionError: FA4's checks
            times[name] = f"n/a: {first_line(e)[:60]}"
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--quick", action="store_true", help="one tiny shape (a smoke run)")
    parser.add_argument("--shapes", help="comma-separated labels of SHAPES to time (default: all), e.g. ViT-B/16")
    parser.add_argument("--repeats", type=int, default=10, help="samples per case (at least 10; the median is reported)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_attention: no CUDA device here; the timings need a GPU. "
              "(`--device cpu --quick` runs a smoke test of this script.)", file=sys.stderr)
        return 2
    if args.device == "cuda" and not vitfast.has_cuda_kernels():
        print("bench_attention: this vitfast build has no CUDA kernels (built without nvcc).", file=sys.stderr)
        return 2
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        wanted = args.shapes.split(",")
        unknown = sorted(set(wanted) - {s[0] for s in shapes})
        if unknown:
            print(f"bench_attention: --shapes: unknown label(s) {', '.join(unknown)}; expected some of "
                  f"{', '.join(s[0] for s in shapes)}", file=sys.stderr)
            return 2
        shapes = [s for s in shapes if s[0] in wanted]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.device == "cpu":
        dtype = torch.float32
    torch.manual_seed(0)
    fns = make_fns(args.device)
    env = environment(args.device)
    if args.device == "cuda":
        env["flash-attn-4"] = flash_attention_4()[1]

    lines = ["# Attention: vitfast vs SDPA backends, FlashAttention-4 and plain PyTorch", "",
             " | ".join(f"{k}: {v}" for k, v in env.items()) + f" | dtype: {dtype}", "",
             f"Timing: {METHOD}; inputs rotated over more than twice the L2 cache.", "",
             "| shape | B | H | N | d | bias | pass | impl | ms | TFLOP/s | GB/s | vs best SDPA |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines[:5]))
    for label, B, H, N, d in shapes:
        for with_bias in (False, True):
            rows = bench_case(fns, args.repeats, B, H, N, d, dtype, args.device, with_bias)
            for mode in ("fwd", "fwd+bwd"):
                sdpa = [r[0] for (m, n), r in rows.items() if m == mode and n.startswith("sdpa") and isinstance(r, tuple)]
                best = min(sdpa) if sdpa else None
                for (m, name), r in rows.items():
                    if m != mode:
                        continue
                    head = f"| {label} | {B} | {H} | {N} | {d} | {'yes' if with_bias else 'no'} | {mode} | {name} |"
                    if isinstance(r, tuple):
                        ms, tf, gbs = r
                        ratio = f"{best / ms:.2f}x" if best else "-"
                        line = f"{head} {ms:.4f} | {tf:.1f} | {gbs:.0f} | {ratio} |"
                    else:
                        line = f"{head} {r} | | | |"
                    lines.append(line)
                    print(f"{label:<13} bias={'yes' if with_bias else 'no':<3} {mode:<8} {name:<15} "
                          + (f"{r[0]:9.4f} ms {r[1]:7.1f} TFLOP/s {r[2]:7.0f} GB/s  "
                             f"{(best / r[0]) if best else float('nan'):.2f}x best SDPA" if isinstance(r, tuple) else r))
    if args.out:
        write_table("\n".join(lines) + "\n", args.out, echo=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
