"""Which of a self-supervised method's knobs make it learn at small scale: each row of ROWS is one
`python -m vitfast.train --ssl ...` run of the same length from the same seed, its teacher's (DINO) or
backbone's (SwAV) weighted k-NN top-1 on the validation images (k 20, T 0.07, the training split as
memory bank), beside the raw pixels' and the random model's on the same split. Each row also gives the
spread of its validation features (mean cosine, effective dimensions), which tells collapse (all images
alike) from features that are spread but not by class, and the training seconds.

A row is its base's flags plus its own, each a complete command (printed in the table's notes):

    python benchmarks/ssl_ablation.py                              # every row on the built-in data
    python benchmarks/ssl_ablation.py --only base lr-x4 --steps 300
    python benchmarks/ssl_ablation.py --data folder:data/cifar10 --holdout 5000 --out results.md
    python benchmarks/ssl_ablation.py --list                       # the rows and their flags

Runs are kept under --runs (default runs/ssl_ablation/<data>-<steps>), one folder per row: a finished
row is read back, not run again, so a stopped sweep continues where it stopped and the table can be
rebuilt from the folders at any time.
"""
import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import torch

from common import ROOT, environment, write_table  # benchmarks/common.py
from ssl_knn import pixel_features, spread  # benchmarks/ssl_knn.py

import vitfast  # noqa: E402  (common put the checkout first on the path)
from vitfast.models.ssl_heads import dino_head_dims  # noqa: E402
from vitfast.training.config import creation_kwargs, resolve  # noqa: E402
from vitfast.training.distributed import Dist  # noqa: E402
from vitfast.training.knn import extract_features, knn_accuracy  # noqa: E402
from vitfast.training.run_data import build_data  # noqa: E402
from vitfast.training.state import model_from_file  # noqa: E402

# Each method at this scale: two 32 px crops of 0.4-1 of the image (local crops are a row of their own:
# they double a step's time) and the method's own defaults otherwise (DINO's: lr 5e-4 x batch / 256,
# weight decay 0.04 -> 0.4, clip 3, teacher 0.04 -> 0.07 over 10% of the run, momentum 0.996 -> 1, last
# layer frozen 1 epoch, out 4096 for a 96-wide model); warmup 10% of the run, as DINO's 10 of 100 epochs.
CROPS = ["--num-crops", "2", "--size-crops", "32", "--crop-scales", "0.4,1"]
BASE = {method: ["--ssl", method, *CROPS] for method in ("dino", "swav", "mocov3")}

# (name, knob, base, flags), in the order they run: base names the row whose flags this one extends,
# or a method of BASE
ROWS = [
    ("base", "-", "dino", []),
    ("lr-x4", "learning rate", "base", ["--lr", "2e-3"]),
    ("mom-099", "teacher momentum", "base", ["--teacher-momentum", "0.99"]),
    ("out-1024", "output dimension", "base", ["--head-out-dim", "1024"]),
    ("no-freeze", "last-layer freeze", "base", ["--freeze-last-layer-epochs", "0"]),
    ("gray", "crops", "base", ["--crop-grayscale", "1"]),
    ("clip-param", "clipping", "base", ["--clip-mode", "param"]),
    ("mocov3", "method", "mocov3", []),
    ("mocov3-lr-x10", "learning rate", "mocov3", ["--lr", "1.5e-3"]),
    ("mocov3-gray", "crops", "mocov3-lr-x10", ["--crop-grayscale", "1"]),
    ("mocov3-gray-s08", "crops", "mocov3-gray", ["--crop-scales", "0.8,1"]),
    ("gray-s08", "crops", "gray", ["--crop-scales", "0.8,1"]),
    ("swav", "method", "swav", ["--num-clusters", "1000"]),
    ("local-2x6", "crops", "base", ["--num-crops", "2,6", "--size-crops", "32,16",
                                     "--crop-scales", "0.4,1,0.1,0.4"]),
    ("temp-04", "teacher temperature", "base", ["--teacher-temp", "0.04"]),
    ("out-256", "output dimension", "base", ["--head-out-dim", "256"]),
    ("wd-const", "weight decay", "base", ["--weight-decay-end", "0.04"]),
    ("batch-32", "batch size", "base", ["--batch-size", "32", "--steps", "@200%"]),
    ("mom-09", "teacher momentum", "base", ["--teacher-momentum", "0.9"]),
    ("patch-8", "patch size", "base", ["--model-kwargs", "patch_size=8"]),
    ("no-warmup", "warmup", "base", ["--warmup-steps", "0"]),
    ("lr-x16", "learning rate", "base", ["--lr", "8e-3"]),
    ("scale-015", "crops", "base", ["--crop-scales", "0.15,1"]),
    ("out-65536", "output dimension", "base", ["--head-out-dim", "65536"]),
    ("head-wide", "head width", "base", ["--head-hidden-dim", "2048", "--head-bottleneck-dim", "256"]),
    ("warmup-30pct", "warmup", "base", ["--warmup-steps", "@30%"]),
    ("temp-no-warmup", "teacher temperature", "base", ["--warmup-teacher-temp", "0.07"]),
    ("no-clip", "clipping", "base", ["--clip-grad", "none"]),
    ("batch-128", "batch size", "base", ["--batch-size", "128", "--steps", "@50%"]),
]
BY_NAME = {row[0]: row for row in ROWS}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_pico_patch4_32")
    p.add_argument("--model-kwargs", help="vitfast.train's --model-kwargs for every row")
    p.add_argument("--data", default="builtin")
    p.add_argument("--holdout", type=int, help="validate on the last N training images")
    p.add_argument("--steps", type=int, default=300, help="each run's length in optimizer steps ('@50%%' in a "
                   "row's flags is a fraction of it)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--set", default="", metavar="FLAGS", help="more vitfast.train flags for every row, one string "
                   "(after BASE, before the row's own), e.g. --set='--amp bf16'")
    p.add_argument("--only", nargs="*", help="these rows (default: all)")
    p.add_argument("--runs", help="the folder of the rows' runs (default: runs/ssl_ablation/<data>-<steps>)")
    p.add_argument("--list", action="store_true", help="print each row's flags and stop")
    p.add_argument("--out", help="write the table here too")
    return p.parse_args(argv)


def row_flags(name, args):
    """BASE + --set + the flags of the row's chain of bases, '@P%' steps resolved against --steps."""
    _, _, base, own = BY_NAME[name]
    chain = BASE[base] + shlex.split(args.set) if base in BASE else row_flags(base, args)
    return chain + [f"{round(args.steps * float(v[1:-1]) / 100)}" if re.fullmatch(r"@[\d.]+%", v) else v
                    for v in own]


def merged(flags):
    """Flags with each one's last value only, in the order they first appear (a row overrides its base)."""
    out, i = {}, 0
    while i < len(flags):
        valued = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        out[flags[i]] = [flags[i + 1]] if valued else []
        i += 2 if valued else 1
    return [token for flag, value in out.items() for token in (flag, *value)]


def command(name, args, folder):
    data = ["--data", args.data] + (["--holdout", str(args.holdout)] if args.holdout else [])
    model = ["--model", args.model] + (["--model-kwargs", args.model_kwargs] if args.model_kwargs else [])
    flags = merged([*model, *data, "--device", args.device, "--data-on-device", "--batch-size",
                    str(args.batch_size), "--steps", str(args.steps), *row_flags(name, args)])
    steps = flags[flags.index("--steps") + 1]
    warm = [] if "--warmup-steps" in flags else ["--warmup-steps", str(round(int(steps) / 10))]
    return ([sys.executable, "-m", "vitfast.train", *flags, *warm, "--eval-every-steps", steps, "--ptq-report", "",
             "--quiet", "--output", folder])


def uniform_loss(folder, cfg_flags):
    """The loss of outputs that tell no image from another: ln K of a DINO run, ln clusters of a SwAV
    one, 2 x T x 2 ln(batch) of a MoCo v3 one."""
    cfg = resolve(cfg_flags + ["--output", folder])
    if cfg["ssl"] == "swav":
        return math.log(cfg["num_clusters"][0])
    if cfg["ssl"] == "mocov3":
        return 4 * cfg["moco_t"] * math.log(cfg["batch_size"])
    with torch.device("meta"):
        width = vitfast.create_model(cfg["model"], num_classes=0, **creation_kwargs(cfg)).num_features
    return math.log(cfg["head_out_dim"] or dino_head_dims(width)[2])


def run_row(name, args, folder, val_loader):
    cmd = command(name, args, folder)
    summary = os.path.join(folder, "summary.json")
    if not os.path.exists(summary):
        print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        subprocess.run(cmd[:-2] + ["--resume", "auto"] + cmd[-2:] if os.path.isdir(folder) else cmd, cwd=ROOT,
                       check=True)
        print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    with open(summary) as f:
        s = json.load(f)
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        losses = [r["loss"] for r in map(json.loads, f) if r["kind"] == "train"]
    backbone, _ = model_from_file(os.path.join(folder, "model.safetensors"), "--checkpoint")
    feats, _ = extract_features(backbone, val_loader, torch.device(args.device))
    cos, dims = spread(feats)
    return dict(acc1=s["val_acc1"], acc5=s["val_acc5"], loss=losses[-1] if losses else float("nan"),
                uniform=uniform_loss(folder, cmd[3:-2]), cos=cos, dims=dims, seconds=s["train_seconds"],
                steps=s["steps"], cmd=cmd)


def baselines(args):
    """(data, rows {name: result}) of the raw pixels and the random model (the runs' seed)."""
    cfg = resolve(command("base", args, "unused")[3:])
    data = build_data(cfg, Dist("cpu"), lambda key: "--" + key)
    bank, val = data.bank_loader(), data.val_loader
    out = {}
    pixels = [pixel_features(bank), pixel_features(val)]
    torch.manual_seed(cfg["seed"])
    model = vitfast.create_model(cfg["model"], num_classes=0, **creation_kwargs(cfg))
    device = torch.device(args.device)
    unit = torch.nn.functional.normalize
    for name, ((b, bl), (v, vl)) in (("raw pixels", pixels),
                                     ("random init", [extract_features(model.to(device), loader, device)
                                                      for loader in (bank, val)])):
        acc1, acc5 = knn_accuracy(unit(b, dim=-1), bl, unit(v, dim=-1), vl, data.num_classes)
        cos, dims = spread(unit(v, dim=-1))
        out[name] = dict(acc1=acc1, acc5=acc5, cos=cos, dims=dims)
    return data, out


def table(args, data, base_rows, results, env):
    lines = [f"# Self-supervised knobs at small scale: {args.model} on `{args.data}`", "",
             f"{len(data.train_set)} training images (the k-NN memory bank), {len(data.val_set)} validation images; "
             f"each run {args.steps} steps of {args.batch_size} unless its row says otherwise, from seed 0, "
             f"warmup 10% of its steps; weighted k-NN k 20, T 0.07 on the class token of the backbone each method "
             "reports (DINO's teacher, SwAV's and MoCo v3's trained one). Mean cosine and effective dimensions (participation ratio) of the validation "
             "features tell collapse (near 1 and near 1) from spread features.", "",
             "| row | knob | flags beyond its base | k-NN top-1 % | top-5 % | last loss (uniform) | mean cosine | "
             "effective dims | steps | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in base_rows.items():
        lines.append(f"| {name} | - | - | {r['acc1']:.2f} | {r['acc5']:.2f} | - | {r['cos']:.3f} | {r['dims']:.1f} "
                     f"| 0 | 0 |")
    for name, r in results.items():
        _, knob, base, own = BY_NAME[name]
        own = " ".join(own) + (f" (on {base})" if base not in ("base", *BASE) else "")
        lines.append(f"| {name} | {knob} | `{own or '-'}` | {r['acc1']:.2f} | {r['acc5']:.2f} | {r['loss']:.3f} "
                     f"({r['uniform']:.3f}) | {r['cos']:.3f} | {r['dims']:.1f} | {r['steps']} | {r['seconds']:.0f} |")
    lines += ["", "Each row's command (from the repository's root):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: `python -m vitfast.train {shlex.join(r['cmd'][3:-2])}`")
    lines += ["", " · ".join(f"{k}: {v}" for k, v in env.items() if k != "kernels"), ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    names = args.only or [r[0] for r in ROWS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        sys.exit(f"--only: no row named {', '.join(unknown)} (--list shows them)")
    if args.list:
        for name in names:
            print(f"{name}: {shlex.join(command(name, args, 'OUT')[3:])}")
        return
    runs = args.runs or os.path.join(ROOT, "runs", "ssl_ablation",
                                     f"{re.sub(r'[^A-Za-z0-9]+', '_', args.data)}-{args.steps}")
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    data, base_rows = baselines(args)
    env = environment(args.device)
    results = {}
    for name in names:
        results[name] = run_row(name, args, os.path.join(runs, name), data.val_loader)
        write_table(table(args, data, base_rows, results, env), args.out, echo=False)
    write_table(table(args, data, base_rows, results, env), args.out)


if __name__ == "__main__":
    main()
