"""Where a model's step goes, host against device, on each backend: torch.profiler over a few steps of
one model exactly as bench_models.py times them (bf16 inference; training under bf16 autocast with
AdamW), per variant ("timm": timm's eager model, the baseline of models_<gpu>.md; "sdpa" and "vitfast":
vitfast's model on that backend), the wall time per step beside the host's CPU time and the GPU's kernel
time, and the ops that cost the host most. A step whose host time reaches its wall time is host-bound:
the GPU waits for launches (the ViT-Ti case of benchmarks/results/models_h200.md).

    python benchmarks/profile_backend.py --model vit_tiny_patch16_224 --batch 256 [--train] [--out FILE]
    python benchmarks/profile_backend.py --device cpu --quick       # a smoke run: a tiny model, no useful numbers
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench_models import bench_inference, bench_training, build, images, prepare  # the steps it times
from common import environment, write_table  # benchmarks/common.py

QUICK = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="profiled steps per variant (after 3 unprofiled ones)")
    p.add_argument("--train", action="store_true", help="profile training steps (forward, backward, AdamW) too")
    p.add_argument("--backends", default="timm,sdpa,vitfast", help="timm (eager), or a vitfast backend")
    p.add_argument("--top", type=int, default=8, help="ops listed per variant and mode, by host time")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        raise SystemExit(f"profile_backend.py: --steps and --batch must be at least 1, got {args.steps} and {args.batch}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("profile_backend.py: --device cuda: no CUDA GPU here (--device cpu profiles the host side "
                         "alone)")
    return args


def profiled_steps(step, steps, cuda):
    """(wall ms per step, the profiler) over `steps` calls of step() after 3 unprofiled ones: CPU ops, and
    CUDA kernels on a GPU. profile_step.py sorts the same profile's kernels by kind."""
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - start) * 1e3 / steps
    return wall, prof


def profile_step(step, steps, cuda):
    """(wall ms per step, host CPU ms per step, GPU kernel ms per step, the profiler's averages)."""
    wall, prof = profiled_steps(step, steps, cuda)
    averages = prof.key_averages()
    host = sum(e.self_cpu_time_total for e in averages) / 1e3 / steps
    device = sum(getattr(e, "self_device_time_total", 0) for e in averages) / 1e3 / steps if cuda else 0.0
    return wall, host, device, averages


def main(argv=None):
    args = parse_args(argv)
    kw, batch = (QUICK, 2) if args.quick else ({}, args.batch)
    size = kw.get("img_size", 224)
    env = environment(args.device)
    lines = ["# profile_backend.py: host and device time per step", "",
             *(f"- {k}: {v}" for k, v in env.items()),
             f"- model: {args.model}, batch {batch}, bench_models.py's steps, {args.steps} profiled after 3",
             "- host = the profiler's self CPU time of every op per step (Python between ops not counted);"
             " device = its kernels' time", "",
             "| variant | mode | wall ms/step | host ms/step | device ms/step | host / wall |", "|---|---|---|---|---|---|"]
    tops = []
    for variant in args.backends.split(","):
        source, backend = ("timm", None) if variant == "timm" else ("vitfast", variant)
        for train in (False, True) if args.train else (False,):
            dtype = torch.float32 if train else torch.bfloat16
            model, run = prepare(lambda: build(args.model, source, kw), backend, None, args.device, dtype)
            x = images(batch, size, args.device, dtype)
            step = bench_training(model.train(), run, x, args.device) if train else bench_inference(model.eval(), x)
            wall, host, dev, averages = profile_step(step, args.steps, args.device == "cuda")
            mode = "training" if train else "inference"
            lines.append(f"| {variant} | {mode} | {wall:.2f} | {host:.2f} | {dev:.2f} | {host / wall:.2f} |")
            rows = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:args.top]
            tops += ["", f"## {variant}, {mode}: the ops with the most host time (per step)", "",
                     "| op | calls | host us | device us |", "|---|---|---|---|"]
            tops += [f"| {e.key[:70]} | {e.count // args.steps} | {e.self_cpu_time_total / args.steps:.0f} | "
                     f"{getattr(e, 'self_device_time_total', 0) / args.steps:.0f} |" for e in rows]
            model = run = x = None
    write_table("\n".join(lines + tops) + "\n", args.out)


if __name__ == "__main__":
    main()
