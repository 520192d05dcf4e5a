"""Where a model's step goes, host against device, on each backend: torch.profiler over a few bf16
inference (and training) steps of one model, per backend ("sdpa": PyTorch's ops, timm's path; "vitfast":
the fused ops where the dispatch data chose them), the wall time per step beside the host's CPU time and
the GPU's kernel time, and the ops that cost the host most. A step whose host time reaches its wall time
is host-bound: the GPU waits for launches (the ViT-Ti case of benchmarks/results/models_h200.md).

    python benchmarks/profile_backend.py --model vit_tiny_patch16_224 --batch 256 [--train] [--out FILE]
    python benchmarks/profile_backend.py --device cpu --quick       # a smoke run: a tiny model, no useful numbers
"""
import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common import environment, write_table  # benchmarks/common.py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vitfast  # noqa: E402

QUICK = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="profiled steps per backend (after 3 unprofiled ones)")
    p.add_argument("--train", action="store_true", help="profile training steps (forward, backward, AdamW) too")
    p.add_argument("--backends", default="sdpa,vitfast")
    p.add_argument("--top", type=int, default=8, help="ops listed per backend and mode, by host time")
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


def make_step(model, x, train):
    if not train:
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16):
                model(x)
        return step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.randint(0, model.num_classes, (x.shape[0],), device=x.device)

    def step():
        with torch.autocast(x.device.type, torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def profile_step(step, steps, cuda):
    """(wall ms per step, host CPU ms per step, GPU kernel ms per step, the profiler's averages)."""
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
    averages = prof.key_averages()
    host = sum(e.self_cpu_time_total for e in averages) / 1e3 / steps
    device = sum(getattr(e, "self_device_time_total", 0) for e in averages) / 1e3 / steps if cuda else 0.0
    return wall, host, device, averages


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    kwargs, batch = (QUICK, 2) if args.quick else ({}, args.batch)
    env = environment(device)
    lines = ["# profile_backend.py: host and device time per step", "",
             *(f"- {k}: {v}" for k, v in env.items()),
             f"- model: {args.model}, batch {batch}, bf16 autocast, {args.steps} profiled steps after 3",
             "- host = the profiler's self CPU time of every op per step (Python between ops not counted);"
             " device = its kernels' time", "",
             "| backend | mode | wall ms/step | host ms/step | device ms/step | host / wall |", "|---|---|---|---|---|---|"]
    tops = []
    for backend in args.backends.split(","):
        for train in (False, True) if args.train else (False,):
            torch.manual_seed(0)
            model = vitfast.create_model(args.model, backend=backend, **kwargs).to(device)
            size = model.default_cfg.get("input_size", (3, 224, 224))[-1] if not args.quick else QUICK["img_size"]
            x = torch.randn(batch, 3, size, size, device=device)
            wall, host, dev, averages = profile_step(make_step(model, x, train), args.steps, device.type == "cuda")
            mode = "training" if train else "inference"
            lines.append(f"| {backend} | {mode} | {wall:.2f} | {host:.2f} | {dev:.2f} | {host / wall:.2f} |")
            rows = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:args.top]
            tops += ["", f"## {backend}, {mode}: the ops with the most host time (per step)", "",
                     "| op | calls | host us | device us |", "|---|---|---|---|"]
            tops += [f"| {e.key[:70]} | {e.count // args.steps} | {e.self_cpu_time_total / args.steps:.0f} | "
                     f"{getattr(e, 'self_device_time_total', 0) / args.steps:.0f} |" for e in rows]
            del model, x
    write_table("\n".join(lines + tops) + "\n", args.out)


if __name__ == "__main__":
    main()
