"""What sharding costs in speed: images/s of `torchrun -m vitfast.train` on N ranks holding the model
whole (DDP) and sharded (--fsdp), the same model, global batch and data, side by side.

Each rate is the median of vitfast.train's own per-interval rates (rank 0's log lines: images/s of the
whole global batch since the previous line, the first interval, the warm-up, left out); "per rank"
divides it by N. Each run is a torchrun of its own (fresh processes, gloo on the CPU, NCCL on GPUs).
On a CPU the ranks share the machine's cores (one thread each here) and gloo's all-gather and
reduce-scatter go through memory: the ratio says what FSDP's extra collectives cost against DDP's
one all-reduce there, not what they cost between GPUs.

    python benchmarks/bench_sharding.py [--model vit_tiny_patch16_224 --model-kwargs img_size=32,patch_size=4]
                                        [--ranks 2] [--batch-size 64] [--steps 60] [--device cpu]
                                        [--out benchmarks/results/sharding_cpu.md]
    python benchmarks/bench_sharding.py --quick      # every row on a tiny model, no useful numbers
"""
import argparse
import os
import subprocess
import sys
import tempfile

from common import environment, train_interval_rate, write_table  # benchmarks/common.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [("DDP (whole model on each rank)", []), ("FSDP (--fsdp)", ["--fsdp"])]
QUICK = ["--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--model-kwargs", default="img_size=32,patch_size=4", help="as vitfast.train's")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="global, as vitfast.train's")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--port", type=int, default=29651)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.ranks < 2:
        p.error(f"--ranks must be at least 2 (DDP and FSDP need several processes), got {args.ranks}")
    return args


def rate(args, extra, folder, port):
    """rank 0's median interval images/s of one torchrun."""
    flags = ["--model", args.model, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
             "--log-every", str(args.log_every), "--device", args.device, "--amp", args.amp, "--ptq-report", "",
             "--eval-every", "1000", "--quiet", "--output", folder]
    flags += QUICK if args.quick else (["--model-kwargs", args.model_kwargs] if args.model_kwargs else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
                           "--master_port", str(port), "-m", "vitfast.train", *flags, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_sharding.py: the {' '.join(extra) or 'DDP'} run failed:\n{done.stderr[-3000:]}")
    return train_interval_rate(folder)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.steps, args.log_every, args.batch_size = 6, 2, 16
    env = environment(args.device)
    rows = ["| held by | ranks | images/s | per rank | vs DDP |", "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        rates = [rate(args, extra, os.path.join(tmp, str(i)), args.port + i) for i, (_, extra) in enumerate(VARIANTS)]
    for (name, _), r in zip(VARIANTS, rates):
        rows.append(f"| {name} | {args.ranks} | {r:,.0f} | {r / args.ranks:,.0f} | {r / rates[0]:.2f}x |")
    model = f"{args.model} ({args.model_kwargs})" if args.model_kwargs and not args.quick else args.model
    head = [f"# DDP against FSDP: `vitfast.train` images/s on {args.ranks} ranks ({env['date']}, commit "
            f"{env['commit']}, torch {env['torch']}, {env['GPU']})", "",
            f"{model}, global batch {args.batch_size}, {args.steps} steps, AdamW, --amp {args.amp}, "
            f"{args.device}; the median of rank 0's interval rates (first left out). "
            + ("On a CPU the ranks share its cores and gloo's collectives go through memory: what FSDP's "
               "all-gathers and reduce-scatters cost there, not between GPUs." if args.device == "cpu" else ""),
            ""]
    write_table("\n".join(head + rows) + "\n", args.out)


if __name__ == "__main__":
    main()
