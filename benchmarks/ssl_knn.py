"""What self-supervised pretraining buys: weighted k-NN accuracy (DINO's protocol: k 20, T 0.07, the
training split as memory bank) and a linear probe's (vitfast.eval --linear-probe's: SGD on the frozen
features of the training split, scored on the validation images) of

  raw pixels        the normalised images themselves, flattened (no model);
  random init       the model as created, before any training;
  --ssl dino        the teacher backbone of `python -m vitfast.train --ssl dino` (run in this process),
  or --ssl swav     or the backbone of `--ssl swav` or `--ssl mocov3` (--ssl picks the method);
  supervised        the same model trained with labels for about the same training time (its length in
                    steps set from a short timed run of it), as k-NN of its features and as its
                    classifier's top-1;

on the same data and validation images, one table with the machine, time and commit; each row also
gives the spread of its validation features (mean cosine, effective dimensions), which tells a collapsed
self-supervised model (all images alike) from one that learned other features than the classes. Beside
the table (--out), a plot: each run's k-NN at its validations and the supervised classifier's top-1,
against epochs and against minutes of training, with raw pixels and the random model as levels.

    python benchmarks/ssl_knn.py [--model vit_pico_patch4_32] [--data builtin] [--epochs 20]
                                 [--set key=value ...] [--out benchmarks/results/ssl_knn_cpu.md]
    python benchmarks/ssl_knn.py --quick          # every row on a tiny model, no useful numbers
    python benchmarks/ssl_knn.py --no-supervised  # without the supervised row (half the time)
    python benchmarks/ssl_knn.py --ssl swav       # SwAV's backbone instead of DINO's
    python benchmarks/ssl_knn.py --recipe mocov3_cifar10,swav_cifar10  # two recipes, one table
"""
import argparse
import json
import os
import shlex
import sys
import tempfile
import time

import torch

from common import environment, write_table  # benchmarks/common.py
from line_chart import Panel, write_svg  # benchmarks/line_chart.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vitfast  # noqa: E402
from vitfast.cli import UsageError  # noqa: E402
from vitfast.eval import probe_rates  # noqa: E402
from vitfast.train import main as train_main  # noqa: E402
from vitfast.training.config import as_flags, creation_kwargs, resolve  # noqa: E402
from vitfast.training.distributed import Dist  # noqa: E402
from vitfast.training.knn import extract_features, knn_accuracy  # noqa: E402
from vitfast.training.linear_probe import linear_probe  # noqa: E402
from vitfast.training.run_data import build_data  # noqa: E402
from vitfast.training.state import model_from_file  # noqa: E402

QUICK_MODEL = ["--model", "vit_tiny_patch16_224",
               "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"]
QUICK_CROPS = ["--num-crops", "2,2"]  # a method's default crops, fewer (a recipe's are kept: 32 px already)
QUICK_HEAD = {"dino": ["--head-out-dim", "256"], "swav": ["--head-dims", "32,64,16", "--num-clusters", "32"],
              "mocov3": ["--num-crops", "2", "--moco-mlp-dim", "64", "--moco-dim", "16"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", help="a packaged self-supervised recipe (e.g. dino_cifar10), or several separated by "
                   "commas that share a model and data: each run is `-c RECIPE`, and the other rows take their model, "
                   "data and normalisation (the flags below override them)")
    p.add_argument("--model", help="default: the recipe's, else vit_pico_patch4_32")
    p.add_argument("--data", help="default: the recipe's, else builtin")
    p.add_argument("--holdout", type=int, default=None, help="validate on the last N training images")
    p.add_argument("--ssl", choices=["dino", "swav", "mocov3"], help="the self-supervised method (default: the "
                   "recipe's, else dino)")
    p.add_argument("--epochs", type=int, default=20, help="the self-supervised run's length")
    p.add_argument("--max-time", type=float, help="stop the self-supervised run's training after this many "
                   "seconds (vitfast.train --max-time; the table says the steps it ran)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more vitfast.train flags' keys for "
                   "the self-supervised run (e.g. batch_size=256 num_crops=2,6)")
    p.add_argument("--set-both", nargs="*", default=[], metavar="KEY=VALUE", help="vitfast.train flags' keys "
                   "for both runs, the self-supervised and the supervised one (e.g. model_kwargs=img_size=32 "
                   "amp=bf16)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both runs train and the "
                   "features are computed")
    p.add_argument("--no-supervised", action="store_true", help="leave out the supervised row (it doubles the "
                   "benchmark's time)")
    p.add_argument("--probe-epochs", type=int, default=100, help="the linear probe's epochs (DINO's protocol, "
                   "vitfast.eval --linear-probe's default)")
    p.add_argument("--probe-lr", default="0.001", help="the linear probe's rate, several separated by commas, or "
                   "'sweep' (vitfast.eval --probe-lr's: the rate picked on a tenth of the training features)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="write the table here (Markdown) and the curves beside it (the same name, .svg): "
                   "each run's k-NN and the supervised classifier's top-1 against epochs and minutes of training")
    return p.parse_args(argv)


@torch.no_grad()
def pixel_features(loader):
    feats, labels = [], []
    for x, y in loader:
        feats.append(x.flatten(1).float())
        labels.append(y)
    feats, labels = torch.cat(feats), torch.cat(labels)
    return feats[labels >= 0], labels[labels >= 0]


def spread(feats):
    """(mean cosine between two different images' features, effective dimensions: the participation ratio
    (sum of the covariance's eigenvalues)^2 / sum of their squares) of L2-normalised features; a collapsed
    model has a mean cosine near 1 and about one effective dimension."""
    f = feats[:2000].double()
    sim = f @ f.T
    mean_cos = (sim.sum() - sim.diagonal().sum()) / (len(f) * (len(f) - 1))
    ev = torch.linalg.eigvalsh(torch.cov(f.T)).clamp(min=0)
    return mean_cos.item(), (ev.sum() ** 2 / (ev ** 2).sum()).item()


def knn_row(feature_pairs, classes, probe):
    """(k-NN top-1, top-5, mean cosine, effective dimensions, linear-probe top-1, its lr) of ((bank, labels),
    (validation, labels)), features as computed (k-NN and the spread L2-normalise them; the linear probe,
    DINO's protocol, takes them as they are: probe = (epochs, (lr, ...)))."""
    (bank, bank_labels), (feats, labels) = feature_pairs
    unit = torch.nn.functional.normalize
    logits, _, lr = linear_probe(bank, bank_labels, feats, classes, *probe)
    probe_top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    return (*knn_accuracy(unit(bank, dim=-1), bank_labels, unit(feats, dim=-1), labels, classes),
            *spread(unit(feats, dim=-1)), probe_top1, lr)


def model_features(backbone, bank_loader, val_loader, device):
    backbone.to(device)
    return (extract_features(backbone, bank_loader, device, normalize=False),
            extract_features(backbone, val_loader, device, normalize=False))


def supervised_steps(sup_args, seconds, batch_size, tmp):
    """The supervised steps that take `seconds`, from a short timed run's own step rate (not its validation)."""
    train_main(sup_args + ["--steps", "30", "--log-every", "5", "--output", os.path.join(tmp, "probe")])
    with open(os.path.join(tmp, "probe", "metrics.jsonl")) as f:
        rates = sorted(r["images_per_second"] for r in map(json.loads, f) if r["kind"] == "train")
    return max(10, round(seconds * rates[len(rates) // 2] / batch_size))


def val_curve(run_dir, train_images):
    """A run's validations in its metrics.jsonl: step, epochs (images seen / training images), minutes of
    training (its validations not counted) and top-1 (a self-supervised run's k-NN, a supervised one's
    classifier)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [{"step": r["step"], "epochs": r["seen"] / train_images, "minutes": r["train_seconds"] / 60,
                 "acc1": r["acc1"]} for r in map(json.loads, f) if r["kind"] == "val"]


def plot(path, curves, levels, caption):
    """curves {label: val_curve} against epochs and against minutes of training, beside levels {label: top-1}
    (raw pixels, the random model) as dashed lines, one SVG."""
    panels = [Panel(f"top-1 % against {x}", x if x == "epochs" else "minutes of training", "top-1 %")
              for x in ("epochs", "minutes")]
    for panel, x in zip(panels, ("epochs", "minutes")):
        for label, curve in curves.items():
            panel.add_line(label, [(p[x], p["acc1"]) for p in curve])
        for label, acc1 in levels.items():
            panel.add_ref(label, acc1)
    write_svg(panels, path, caption)


def flags(items):
    """KEY=VALUE items as vitfast.train's flags (the first "=" splits, so model_kwargs=a=1,b=2 works)."""
    out = []
    for item in items:
        key, _, value = item.partition("=")
        out += ["--" + key.replace("_", "-"), value]
    return out


# a recipe's keys that the rows without its method share with it (the supervised run, the random model, pixels):
# its data pipeline too, else the supervised run decodes and augments on the host and trains fewer steps in
# its time (on the H200: 1,217 img/s so, 2026-11-28; about 3,500 with the pipeline on the device, 2026-11-26)
SHARED = ("model", "model_kwargs", "data", "holdout", "data_on_device", "workers", "mean", "std", "amp")


def recipe_flags(names):
    """The SHARED keys of packaged recipes as vitfast.train's flags, and each recipe's method; recipes
    compared in one table must share them (the baselines and the supervised run are computed once)."""
    configs = [resolve(["-c", name]) for name in names]
    shared = [as_flags(cfg, SHARED) for cfg in configs]
    if any(flags != shared[0] for flags in shared[1:]):
        raise UsageError(f"--recipe: {','.join(names)} differ in {', '.join(SHARED)}; one table compares "
                         "recipes on the same model and data")
    return shared[0], [cfg["ssl"] for cfg in configs]


def ssl_run_args(args, recipe, method, common):
    """vitfast.train's arguments for one self-supervised run of the table."""
    run = (["-c", recipe] if recipe else []) + common + ["--ssl", method]
    # --quick: 4 steps, no warmup (a recipe's is epochs long)
    quick = ([] if recipe else QUICK_CROPS) + ["--batch-size", "32"] + QUICK_HEAD[method]
    run += quick + ["--steps", "4", "--warmup-epochs", "0"] if args.quick else ["--epochs", str(args.epochs)]
    run += [] if recipe else ["--eval-every", str(args.epochs)]  # a recipe's own monitor is kept
    run += ["--max-time", str(args.max_time)] if args.max_time else []
    return run + flags(args.set)


METHOD = {"dino": "DINO", "swav": "SwAV", "mocov3": "MoCo v3"}


def main(argv=None):
    args = parse_args(argv)
    recipes = args.recipe.split(",") if args.recipe else [None]
    shared, methods = recipe_flags(recipes) if args.recipe else ([], [None])
    if args.ssl and len(recipes) > 1:
        raise UsageError(f"--ssl: several recipes ({args.recipe}) each train their own method; leave --ssl out")
    methods = [args.ssl or method or "dino" for method in methods]
    if not args.recipe:  # without one: vit_pico on the built-in images, every run's pipeline on the device, as
        # SHARED keeps a recipe's (on the host, decoding JPEGs each epoch on the same 2 CPU cores, the supervised
        # run trained 1,119 s where its 30 timed steps gave the steps for 865 s; on the device 783 s for 761 s)
        args.model, args.data = args.model or "vit_pico_patch4_32", args.data or "builtin"
        shared = ["--data-on-device"]
    common = shared + ["--ptq-report", "", "--quiet", "--device", args.device] + \
        (["--data", args.data] if args.data else []) + (["--holdout", str(args.holdout)] if args.holdout else [])
    common += QUICK_MODEL if args.quick else (["--model", args.model] if args.model else [])
    common += flags(args.set_both)
    runs = [{"recipe": recipe, "method": method, "args": ssl_run_args(args, recipe, method, common)}
            for recipe, method in zip(recipes, methods)]
    for run in runs:  # each run's settings, once; the first's data is the table's
        run["cfg"] = resolve(run["args"] + ["--output", "unused"])
    cfg = runs[0]["cfg"]
    device = torch.device(args.device)
    probe = (2 if args.quick else args.probe_epochs, probe_rates(args.probe_lr))
    data = build_data(cfg, Dist("cpu"), lambda key: "--" + key)
    classes, bank_loader, val_loader = data.num_classes, data.bank_loader(), data.val_loader
    rows = {}
    pixels = (pixel_features(bank_loader), pixel_features(val_loader))
    rows["raw pixels"] = (*knn_row(pixels, classes, probe), None, 0)
    torch.manual_seed(cfg["seed"])
    random_init = vitfast.create_model(cfg["model"], num_classes=0, **creation_kwargs(cfg))
    rows["random init"] = (*knn_row(model_features(random_init, bank_loader, val_loader, device), classes, probe),
                           None, 0)
    rates = (f"lr {probe[1][0]:g}" if len(probe[1]) == 1 else f"each row's lr of {len(probe[1])} "
             f"({probe[1][0]:g}..{probe[1][-1]:g}) most accurate on a tenth of the training features held out")
    env = environment(args.device)
    supervised = {}  # once trained: its validations ("curve") and its command and seconds ("line")

    def report():  # written as each row comes in (a device call may end first)
        done = [run for run in runs if "steps" in run]
        where = "quick: no useful numbers" if args.quick else ("CPU" if args.device == "cpu" else env["GPU"])
        lines = [f"# k-NN accuracy after self-supervised pretraining ({where})", "",
                 f"{cfg['model']} on `{cfg['data']}` ({len(data.train_set)} training images as memory bank, "
                 f"{len(data.val_set)} validation images), weighted k-NN k 20, T 0.07."]
        lines += [f"{METHOD[run['method']]} run: {' '.join(run['args'])} ({run['steps']} steps"
                  f"{', ' + run['stopped'] if run['stopped'] else ''}, {run['seconds']:.0f} s with its validations)."
                  for run in done]
        lines += [supervised["line"]] if supervised else []
        lines += [f"Linear probe: {probe[0]} epochs of SGD on the frozen features ({rates} on a cosine).",
                  "", "| features | k-NN top-1 % | k-NN top-5 % | mean cosine | effective dims | linear probe "
                  "top-1 % | classifier top-1 % | training s |", "|---|---|---|---|---|---|---|---|"]
        for name, (acc1, acc5, cos, dims, probe1, lr, top1, secs) in rows.items():
            probe1 = f"{probe1:.2f}" + (f" (lr {lr:g})" if len(probe[1]) > 1 else "")
            lines.append(f"| {name} | {acc1:.2f} | {acc5:.2f} | {cos:.3f} | {dims:.1f} | {probe1} | "
                         f"{'-' if top1 is None else f'{top1:.2f}'} | {secs:.0f} |")
        for run in done:
            lines += ["", f"{METHOD[run['method']]}'s k-NN top-1 during pretraining (step: %): " +
                      ", ".join(f"{p['step']}: {p['acc1']:.2f}" for p in run["curve"])]
        lines += ["", " · ".join(f"{k}: {v}" for k, v in env.items() if k != "kernels")]
        lines += ["command: python benchmarks/ssl_knn.py " + shlex.join(sys.argv[1:] if argv is None else argv)]
        lines += [f"config: {run['config']}" for run in done] + [""]
        write_table("\n".join(lines), args.out)
        if args.out:  # the curves beside the table, k-NN against epochs and minutes
            curves = {f"{run['name']} k-NN": run["curve"] for run in done}
            if supervised:
                curves["supervised (its classifier)"] = supervised["curve"]
            plot(os.path.splitext(args.out)[0] + ".svg", curves,
                 {f"{name} k-NN": rows[name][0] for name in ("raw pixels", "random init")},
                 f"{cfg['model']} on {cfg['data']} ({where}), {env['date']}")

    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            start, output = time.perf_counter(), os.path.join(tmp, f"ssl{i}")
            result = train_main(run["args"] + ["--output", output])
            backbone, _ = model_from_file(os.path.join(output, "model.safetensors"), "--checkpoint")
            name = f"--ssl {run['method']}" + (f" (-c {run['recipe']})" if len(runs) > 1 else "")
            rows[name] = (*knn_row(model_features(backbone, bank_loader, val_loader, device), classes, probe),
                          None, result["train_seconds"])
            run.update(name=name, steps=result["steps"], stopped=result["stopped"],
                       train_seconds=result["train_seconds"], seconds=time.perf_counter() - start,
                       curve=val_curve(output, len(data.train_set)),  # the k-NN monitor at each --eval-every
                       config=json.loads(json.dumps(
                           {k: run["cfg"][k] for k in ("model", "ssl", "batch_size", "num_crops", "lr")})))
            report()
        if not args.no_supervised:  # trained as long as the longest self-supervised run
            sup_args = common + ["--batch-size", str(cfg["batch_size"])]
            seconds = max(run["train_seconds"] for run in runs)
            steps = 10 if args.quick else supervised_steps(sup_args, seconds, cfg["batch_size"], tmp)
            sup = train_main(sup_args + ["--steps", str(steps), "--output", os.path.join(tmp, "sup")])
            model, _ = model_from_file(os.path.join(tmp, "sup", "model.safetensors"), "--checkpoint")
            supervised.update(curve=val_curve(os.path.join(tmp, "sup"), len(data.train_set)),
                              line=f"Supervised run: {' '.join(sup_args)} --steps {steps} (the steps a timed 30-step "
                                   f"run gave for {seconds:.0f} s; it trained {sup['train_seconds']:.0f} s).")
            model.reset_classifier(0)
            rows["supervised"] = (*knn_row(model_features(model, bank_loader, val_loader, device), classes, probe),
                                  sup["val_acc1"], sup["train_seconds"])
            report()


if __name__ == "__main__":
    try:
        main()
    except UsageError as error:  # a flag of --set, --recipe or the rows' runs that vitfast.train refuses
        sys.exit(f"ssl_knn.py: {error}")
