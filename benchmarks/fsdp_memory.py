"""Per-rank memory of the training state under DDP and under --fsdp: the bytes of parameters, gradients
and AdamW's state one rank holds, counted from the tensors themselves.

Each model is built on the meta device (no memory, so ViT-g and ViT-G cost nothing here), sharded as
`vitfast.train --fsdp` shards it (vitfast.training.parallel.shard: each block, then the root) over a
process group of N ranks made by torch's testing backend "fake" (one process; collectives do nothing),
given gradients, and stepped once by vitfast's AdamW (its parameter groups), so the optimizer state is
the one AdamW creates. The bytes are rank 0's local tensors (FSDP pads each tensor's first dimension to
a multiple of N; rank 0's shard is never the smaller). DDP's rank holds every tensor whole, at any N.
"gathered" is what FSDP holds whole besides, while a step runs: the root's own weights (embeddings,
final norm, head), kept gathered from the forward to the backward, and one block's (two while the next
is prefetched), fp32 (bf16 under --amp bf16). Activations are not counted: they depend on the batch
and are the same under both.

    python benchmarks/fsdp_memory.py [--models vit_base_patch16_224,...] [--ranks 2,4,8]
                                     [--out benchmarks/results/fsdp_memory.md]
"""
import argparse
import os
import sys

import torch
import torch.distributed as tdist

from common import environment, write_table  # benchmarks/common.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vitfast  # noqa: E402
from vitfast.training.optim import create_optimizer  # noqa: E402
from vitfast.training.parallel import shard, shard_units  # noqa: E402

MODELS = ["vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224", "vit_giant_patch14_224",
          "vit_gigantic_patch14_224"]


def local_bytes(tensors):
    """Bytes of this rank's part of each tensor (a DTensor's local shard, a plain tensor whole)."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def measure(name, ranks, sharded):
    """{params, grads, optimizer, gathered, count} in bytes for one rank of `ranks` (sharded: --fsdp)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    tdist.init_process_group("fake", store=FakeStore(), rank=0, world_size=ranks)
    try:
        with torch.device("meta"):
            model = vitfast.create_model(name)
        count = sum(p.numel() for p in model.parameters())
        units = [sum(p.numel() * p.element_size() for p in unit.parameters()) for unit in shard_units(model)]
        own = sum(p.numel() * p.element_size() for p in model.parameters()) - sum(units)  # the root's own
        gathered = own + max(units)
        if sharded:
            shard(model, init_device_mesh("cpu", (ranks,)))
        optimizer = create_optimizer(model, "adamw", 1e-3, 0.05)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # AdamW makes its state (exp_avg, exp_avg_sq, step) at its first step
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        return {"params": local_bytes(model.parameters()), "grads": local_bytes(p.grad for p in model.parameters()),
                "optimizer": local_bytes(state), "gathered": gathered if sharded else 0, "count": count}
    finally:
        tdist.destroy_process_group()


def gib(n):
    return f"{n / 2**30:.2f}"


def table(models, ranks):
    rows = ["| model | parameters | held by | ranks | params GiB | grads GiB | AdamW GiB | total GiB | gathered GiB |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name in models:
        ddp = measure(name, ranks[0], sharded=False)
        layouts = [("DDP", "any", ddp)] + [("FSDP", str(n), measure(name, n, sharded=True)) for n in ranks]
        for how, n, m in layouts:
            total = m["params"] + m["grads"] + m["optimizer"]
            rows.append(f"| {name} | {m['count'] / 1e6:,.0f}M | {how} | {n} | {gib(m['params'])} | {gib(m['grads'])} | "
                        f"{gib(m['optimizer'])} | {gib(total)} | {gib(m['gathered']) if m['gathered'] else '-'} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="registered model names, comma-separated")
    p.add_argument("--ranks", default="2,4,8", help="numbers of ranks to shard over, comma-separated")
    p.add_argument("--out", default=None, help="write the table here too (markdown)")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in vitfast.list_models()]
    if unknown:
        p.error(f"--models: not registered: {', '.join(unknown)} (python -m vitfast.list)")
    try:
        ranks = [int(n) for n in args.ranks.split(",")]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 2:
        p.error(f"--ranks must be whole numbers of at least 2, comma-separated, got {args.ranks!r}")
    env = environment("cpu")
    head = [f"# Per-rank training state under DDP and FSDP ({env['date']}, commit {env['commit']}, torch {env['torch']})",
            "", "fp32 parameters, gradients and AdamW state of one rank, counted from the tensors of a model built "
            "on the meta device and sharded as `vitfast.train --fsdp` shards it over a fake process group "
            "(benchmarks/fsdp_memory.py). Not counted: activations, and communication buffers. \"gathered\": the "
            "root's own weights and one block's, all-gathered while a step runs under FSDP (fp32; half under --amp bf16; "
            "a second block's while it is prefetched).", ""]
    write_table("\n".join(head + table(models, ranks)) + "\n", args.out)


if __name__ == "__main__":
    main()
