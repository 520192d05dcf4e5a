"""Does `python -m vitfast.train` keep the GPU as busy as a bare training loop? Images/s of:

  bare          forward, loss, backward, AdamW step, zero_grad on one random batch kept on the GPU:
                nothing else, no host-device synchronisation (the ceiling for this model and batch);
  bare + sync   the same, reading the loss on the host every step (`torch.isfinite(loss)` in an `if`),
                as vitfast.train did before it kept that check on the device;
  vitfast.train the real entry point (in this process) on the built-in synthetic images, with
                --data-on-device (images on the GPU, crops drawn there) and, with --loader-workers N,
                fed from the host by a DataLoader of N processes instead.

Same model, batch, bf16 autocast, AdamW, label smoothing 0.1 for every row. The train rows are the
median of vitfast.train's own per-interval rates (each log line reports the images/s since the
previous one, measured after the GPU caught up), the first left out (warm-up); evaluation and its
checkpoint come once, after the last step (--eval-every beyond the run), and the whole-run rate, which
counts them and the warm-up, is given too.

    python benchmarks/bench_train_loop.py [--models M ...] [--batch-size 256] [--loader-workers 12]
                                          [--out benchmarks/results/train_loop_h100.md]
    python benchmarks/bench_train_loop.py --device cpu --quick      # every path, no useful numbers
"""
import argparse
import os
import sys
import tempfile

import torch

from common import environment, train_interval_rate, write_table  # benchmarks/common.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vitfast  # noqa: E402
from vitfast.train import main as train_main  # noqa: E402
from vitfast.training.losses import training_loss  # noqa: E402
from vitfast.training.optim import create_optimizer  # noqa: E402

MODELS = ["vit_tiny_patch16_224", "vit_base_patch16_224"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="timed steps of the bare loops")
    p.add_argument("--log-every", type=int, default=20, help="vitfast.train's interval (steps)")
    p.add_argument("--train-steps", type=int, default=200, help="vitfast.train's run length (steps)")
    p.add_argument("--loader-workers", type=int, default=0, help="also time vitfast.train fed by a DataLoader")
    p.add_argument("--backend", default="sdpa", choices=["sdpa", "vitfast", "eager"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    return p.parse_args(argv)


def bare_loop(name, args, sync):
    """Images/s of the bare loop (CUDA events around `steps` steps after 5 warm-up steps)."""
    device = torch.device(args.device)
    kw = dict(img_size=args.img_size, **args.model_kwargs)
    model = vitfast.create_model(name, backend=args.backend, num_classes=10, **kw).to(device).train()
    opt = create_optimizer(model, "adamw", 1e-4, 0.05)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = training_loss(model(x), y, 0.1)
        if sync and not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    else:
        import time
        t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
    else:
        seconds = time.perf_counter() - t0
    del model, opt
    return args.steps * args.batch_size / seconds


def train_entry(name, args, workers):
    """(median interval images/s, whole-run images/s) of vitfast.train on the built-in images."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--model", name, "--backend", args.backend, "--data", "builtin", "--img-size", str(args.img_size),
                "--batch-size", str(args.batch_size), "--steps", str(args.train_steps), "--amp", "bf16",
                "--lr", "1e-4", "--warmup-steps", "0", "--scale", "0.5,1", "--log-every", str(args.log_every),
                "--eval-every", "100000",
                "--ptq-report", "", "--output", os.path.join(out, "run"), "--device", args.device]
        if args.model_kwargs:
            argv += ["--model-kwargs", ",".join(f"{k}={v}" for k, v in args.model_kwargs.items())]
        argv += ["--workers", str(workers)] if workers else ["--data-on-device"]
        summary = train_main(argv)
        return train_interval_rate(os.path.join(out, "run")), summary["images_per_second"]


def main(argv=None):
    args = parse_args(argv)
    args.img_size, args.model_kwargs = 224, {}
    if args.quick:
        args.models, args.batch_size, args.steps, args.train_steps, args.log_every = MODELS[:1], 4, 2, 4, 2
        args.img_size, args.model_kwargs = 32, {"patch_size": 8, "depth": 1}
    env = environment(args.device)
    lines = ["# vitfast.train against a bare training loop", "",
             *(f"- {k}: {v}" for k, v in env.items()),
             f"- batch {args.batch_size}, bf16 autocast, AdamW, backend {args.backend}; bare loops: {args.steps} "
             f"timed steps; vitfast.train: {args.train_steps} steps, a log line every {args.log_every}", "",
             "| model | bare img/s | bare + sync per step | vitfast.train, data on device (median interval / "
             "whole run) | vs bare |" + (f" vitfast.train, DataLoader {args.loader_workers} workers | vs bare |"
                                         if args.loader_workers else ""),
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if args.loader_workers else "")]
    for name in args.models:
        bare = bare_loop(name, args, sync=False)
        synced = bare_loop(name, args, sync=True)
        on_device, whole = train_entry(name, args, 0)
        row = (f"| {name} | {bare:,.0f} | {synced:,.0f} ({synced / bare:.2f}x) | {on_device:,.0f} / {whole:,.0f} | "
               f"{on_device / bare:.2f}x |")
        if args.loader_workers:
            fed, fed_whole = train_entry(name, args, args.loader_workers)
            row += f" {fed:,.0f} / {fed_whole:,.0f} | {fed / bare:.2f}x |"
        lines.append(row)
        print(row, flush=True)
    write_table("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
