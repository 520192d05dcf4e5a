"""What a self-supervised step costs: images/s of `python -m vitfast.train` (in this process, on the
built-in images or --data, crops drawn on the device) for the supervised step and DINO's and SwAV's multi-crop
steps of the same model, on the sdpa and vitfast backends, in one table.

Each rate is the median of vitfast.train's own per-interval rates (each log line's images/s since the
previous one, measured after the device caught up; the first interval, the warm-up, left out), so
it is the real step: the crops drawn in batches, the student's forward per resolution group, the
teacher's, the heads, the loss, the optimizer, the teacher's EMA. An image is one source image (its
crops included); crops/s = images/s x crops per image. bf16 autocast on a GPU, fp32 on the CPU.

    python benchmarks/bench_ssl_step.py [--model vit_small_patch16_224 --model-kwargs img_size=32,patch_size=4,depth=7]
                                        [--batch-size 512] [--out benchmarks/results/ssl_step_h200.md]
    python benchmarks/bench_ssl_step.py --device cpu --model vit_pico_patch4_32 --batch-size 64
    python benchmarks/bench_ssl_step.py --device cpu --quick    # every row on a tiny model, no useful numbers
"""
import argparse
import os
import sys
import tempfile

from common import environment, train_interval_rate, write_table  # benchmarks/common.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vitfast.train import main as train_main  # noqa: E402

# (row name, vitfast.train flags, crops per image)
VARIANTS = [
    ("supervised", [], 1),
    ("DINO, 2 global crops", ["--ssl", "dino", "--num-crops", "2"], 2),
    ("DINO, 2 global + 6 local", ["--ssl", "dino", "--num-crops", "2,6"], 8),
    ("DINO, 2 global + 10 local", ["--ssl", "dino", "--num-crops", "2,10"], 12),
    ("SwAV, 2 global + 6 local", ["--ssl", "swav", "--num-crops", "2,6"], 8),
]
QUICK = ["--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2", "--head-out-dim", "256",
         "--num-clusters", "64"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--model-kwargs", default="img_size=32,patch_size=4,depth=7",
                   help="the model's shape (default: the dino_cifar10 recipe's ViT-S-shaped model at 32 px)")
    p.add_argument("--data", default="builtin", help="vitfast.train's --data (default: the built-in 32 px images)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=60, help="each run's length in steps")
    p.add_argument("--log-every", type=int, default=10, help="steps per measured interval")
    p.add_argument("--backends", nargs="+", default=["sdpa", "vitfast"], choices=["sdpa", "vitfast", "eager"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    return p.parse_args(argv)


def rate(args, backend, flags):
    """The median interval images/s of a vitfast.train run with `flags`."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--model", args.model, "--backend", backend, "--data", args.data, "--data-on-device",
                "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--log-every", str(args.log_every),
                "--warmup-steps", "0", "--eval-every", "1000000", "--ptq-report", "", "--quiet",
                "--device", args.device, "--output", os.path.join(out, "run")]
        argv += ["--amp", "bf16"] if args.device == "cuda" else []
        if args.quick:
            argv += QUICK[:2] + (QUICK[2:4] if "dino" in flags else QUICK[4:] if "swav" in flags else [])
        elif args.model_kwargs:
            argv += ["--model-kwargs", args.model_kwargs]
        train_main(argv + flags)
        return train_interval_rate(os.path.join(out, "run"))


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.log_every = 8, 4, 2
    env = environment(args.device)
    lines = ["# The self-supervised step against the supervised one", "",
             *(f"- {k}: {v}" for k, v in env.items()),
             f"- {args.model} ({'quick: a tiny model' if args.quick else args.model_kwargs}), batch {args.batch_size}, "
             f"{'bf16 autocast' if args.device == 'cuda' else 'fp32'}, data `{args.data}`, crops drawn on the "
             f"device; median of {args.steps // args.log_every - 1} intervals of {args.log_every} steps", "",
             "| step | crops / image | " + " | ".join(f"{b} img/s (crops/s)" for b in args.backends) +
             " | vs supervised | " + (f"{args.backends[-1]} vs {args.backends[0]} |" if len(args.backends) > 1 else ""),
             "|---|---:|" + "---:|" * len(args.backends) + "---:|" + ("---:|" if len(args.backends) > 1 else "")]
    supervised = {}
    for name, flags, crops in VARIANTS:
        rates = {b: rate(args, b, flags) for b in args.backends}
        if not flags:
            supervised = rates
        cells = " | ".join(f"{rates[b]:,.0f} ({rates[b] * crops:,.0f})" for b in args.backends)
        ratio = " / ".join(f"{rates[b] / supervised[b]:.2f}x" for b in args.backends)
        row = f"| {name} | {crops} | {cells} | {ratio} |"
        if len(args.backends) > 1:
            row += f" {rates[args.backends[-1]] / rates[args.backends[0]]:.2f}x |"
        lines.append(row)
        print(row, flush=True)
        write_table("\n".join(lines) + "\n", args.out, echo=False)  # the rows so far, should a time limit end the run
    write_table("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
