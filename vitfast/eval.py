"""python -m vitfast.eval: evaluate a checkpoint in full precision and in every quantized format side
by side (post-training quantization), with per-class results, DVT's budgeted early-exit curve and
attention-rollout maps.

    python -m vitfast.eval --checkpoint runs/x/checkpoint-best.pt --quant fp32,fp16_32,fp16_16,bf16,fp8_e4m3
    python -m vitfast.eval --checkpoint runs/x/model.safetensors --quant fp32,int8 --calib-steps 8
    python -m vitfast.eval --model vit_base_patch32_224 --checkpoint-path ViT-B_32.npz --data cifar10:DIR
"""
import argparse
import json
import os
import sys

import torch
from torch.utils.data import DataLoader

import vitfast
from vitfast import progress
from vitfast.cli import ArgumentParser, UsageError, blame, one_line, out_of_memory, parse_device, run
from vitfast.data import create_dataset, create_transform
from vitfast.data.holdout import hold_out
from vitfast.models import CheckpointMismatchError, get_model_config, load_checkpoint
from vitfast.files import atomic_write
from vitfast.models.checkpoint import is_head_key, load_for_finetune
from vitfast.training.config.command_line import add_flags, parse_flags, refuse_unneeded
from vitfast.training.config.evaluation import DEFAULT_CALIB_STEPS, DEFAULT_MAPS_DIR, EVAL_COMPONENTS, \
    EvalReportOptions, probe_rates
from vitfast.training.config.flags import flag_of
from vitfast.training.evaluate import accuracy, collect_logits
from vitfast.training.methods import SSLOptions
from vitfast.training.state import model_from_file
from vitfast.visualize import rollout_path

OPTIONS = [o for component in EVAL_COMPONENTS for o in component.options()]
# What a file name says it holds, for an output flag given the name of another kind of file.
KINDS = {".pt": "a checkpoint", ".pth": "a checkpoint", ".bin": "a checkpoint", ".ckpt": "a checkpoint",
         ".safetensors": "a checkpoint", ".npz": "a checkpoint", ".json": "a JSON file", ".jsonl": "a JSON lines log",
         ".yaml": "a config", ".yml": "a config", ".png": "a PNG image", ".jpg": "an image", ".jpeg": "an image"}


def build_parser():
    p = ArgumentParser(prog="python -m vitfast.eval",
                       description="Evaluate a checkpoint in full precision and in every quantized format side by "
                                   "side\n(post-training quantization), with per-class results, DVT's budgeted "
                                   "early-exit curve\nand attention-rollout maps.",
                       epilog="examples:\n" + "\n".join(l for l in __doc__.splitlines() if l.startswith("    ")),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_flags(p, OPTIONS)


def parse_args(argv=None):
    """argv -> the evaluation's options (typed, each checked where it enters), then what only several
    values together tell: an option that would do nothing without another, and each component's check."""
    given = parse_flags(build_parser().parse_args(argv), OPTIONS)
    config = {o.key: given.get(o.key, o.default) for o in OPTIONS}
    refuse_unneeded(OPTIONS, config, given, flag_of)
    for component in EVAL_COMPONENTS:
        component.of(config).check(config, flag_of)
    args = argparse.Namespace(**config)
    if args.probe_lr is not None:
        args.probe_lr = probe_rates(args.probe_lr)
    return args


def check_outputs(args):
    """Before any work, so a refused run writes nothing: each file this run writes is new, or --overwrite
    allows replacing it. A name of another kind of file (a checkpoint given to --json), a folder, or
    the file this run reads is refused even with --overwrite: replacing it is never what was meant."""
    reads = {os.path.realpath(p): flag for flag, p in (("--checkpoint", args.checkpoint),
                                                       ("--checkpoint-path", args.checkpoint_path)) if p}
    maps = []
    if args.attention_maps:
        folder = args.maps_dir or DEFAULT_MAPS_DIR
        label = f"--maps-dir {folder}" + ("" if args.maps_dir else " (the default)")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError(f"{label} is a file; expected a folder for the maps (made when missing)")
        _check_parent(label, folder)
        maps = [rollout_path(folder, i) for i in range(args.attention_maps)]
        folders = [p for p in maps if os.path.isdir(p)]
        if folders:
            raise UsageError(f"{label} holds a folder named {os.path.basename(folders[0])}, a map's file name; "
                             "move it, or give another --maps-dir")
        existing = [os.path.basename(p) for p in maps if os.path.exists(p)]
        if existing and not args.overwrite:
            names = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise UsageError(f"{label} already holds {names}; give --overwrite to replace "
                             f"{'them' if len(existing) > 1 else 'it'}, or another --maps-dir")
    for flag, path, suffix in (("--json", args.json, ".json"), ("--dvt-plot", args.dvt_plot, ".png")):
        if not path:
            continue
        what = {".json": "a JSON file", ".png": "a PNG image"}[suffix]
        if os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a folder; expected the name of {what} (ending in {suffix})")
        if not path.lower().endswith(suffix):
            ext = os.path.splitext(path)[1].lower()
            kind = f" names {KINDS[ext]} ({ext}), not {what}:" if ext in KINDS else ":"
            raise UsageError(f"{flag} {path}{kind} expected a file name ending in {suffix}")
        if os.path.realpath(path) in reads:
            raise UsageError(f"{flag} {path} is the file {reads[os.path.realpath(path)]} reads; give another name")
        if os.path.realpath(path) in {os.path.realpath(p) for p in maps}:
            raise UsageError(f"{flag} {path} is also the file of an attention map; give another name")
        _check_parent(f"{flag} {path}", path)
        if os.path.exists(path) and not args.overwrite:
            raise UsageError(f"{flag} {path} exists; give --overwrite to replace it, or another file name")


def _check_parent(label, path):
    """The folder `path` goes into exists or can be made: its nearest existing ancestor is a folder."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{label}: {parent} is a file, not a folder")


def load_model(args):
    """(model, config of its training run or {}, which weights: None where the file does not say)."""
    if args.checkpoint:
        weights = "ema" if args.ema else "raw" if args.raw else "reported"
        model, info = model_from_file(args.checkpoint, "--checkpoint", weights=weights)
        if info["path"] != args.checkpoint:  # a run's folder: its model
            name = os.path.basename(info["path"])
            unfinished = "" if name == "model.safetensors" else " (no model.safetensors: the run is not finished)"
            print(f"--checkpoint {args.checkpoint}: the run's {name}{unfinished}")
        return model, info["config"], info["weights"]
    features = args.knn or args.linear_probe  # scored by its features: a classifier in the file is not needed
    kwargs = dict(args.model_kwargs)
    with blame(f"--model {args.model}"):
        model = vitfast.create_model(args.model, **({"num_classes": 0, **kwargs} if features else kwargs))
    if not args.checkpoint_path:
        return model, {}, None
    try:
        result = (load_for_finetune if features else load_checkpoint)(model, args.checkpoint_path)
    except CheckpointMismatchError as e:
        missing, other = e.result.missing_keys, e.result.unexpected_keys or e.result.mismatched_keys
        if missing and all(map(is_head_key, missing)) and not other:  # DINO's released backbones, for one
            raise UsageError(f"--checkpoint-path {args.checkpoint_path} holds no classifier ({', '.join(missing)} "
                             "missing; a self-supervised backbone?): score its features with --knn or "
                             "--linear-probe, or fine-tune it with python -m vitfast.train --init-checkpoint "
                             "FILE") from e
        raise UsageError(f"--checkpoint-path {args.checkpoint_path} does not fit --model {args.model} "
                         f"({e.brief()}); check --model and --model-kwargs") from e
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        raise UsageError(f"--checkpoint-path {args.checkpoint_path}: cannot read it as weights "
                         f"({one_line(e)})") from e
    return model, {}, result.weights


def calibration_loader(spec, transform, args, dataset=None):
    """Batches for static activation scales: the training split (never the evaluated one; `dataset` when
    the caller has it) through the evaluation transform, in a fixed shuffled order so the same N batches
    are drawn on every run."""
    try:
        dataset = dataset if dataset is not None else create_dataset(spec, "train", transform=transform)
    except (ValueError, OSError) as e:
        raise UsageError(f"--calib-steps {args.calib_steps}: calibration reads the training split of {spec!r}, "
                         f"which cannot be loaded ({e}); use --calib-steps 0 for dynamic scales") from None
    return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def per_class_report(pred, labels, classes):
    rows = []
    for c, name in enumerate(classes):
        tp = int(((pred == c) & (labels == c)).sum())
        precision = tp / max(int((pred == c).sum()), 1)
        recall = tp / max(int((labels == c).sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                     "support": int((labels == c).sum())})
    return rows


def main(argv=None):
    args = parse_args(argv)
    progress.set_quiet(args.quiet)
    formats, recipes = EvalReportOptions.of(vars(args)).recipes()
    check_outputs(args)
    device = parse_device(args.device)
    model, cfg, weights = load_model(args)
    model.to(device).eval()
    name = cfg.get("model") or args.model or model.default_cfg["architecture"]
    if args.dvt_plot and not hasattr(model, "exit_macs"):
        raise UsageError(f"--dvt-plot: {name} is not a DVT model (it has one exit)")
    defaults = get_model_config(name)
    spec = args.data or cfg.get("data")
    holdout = cfg.get("holdout") if spec == cfg.get("data") else None  # the run's own validation images
    if not spec:  # (--model without --data is refused with the arguments)
        raise UsageError(f"--checkpoint {args.checkpoint} records no training data (saved without its run's "
                         "config); give --data SPEC")
    img_size = args.img_size or model.default_cfg["input_size"][-1]
    crop_pct = args.crop_pct or cfg.get("crop_pct") or (1.0 if img_size < 64 else defaults["crop_pct"])
    mean, std = cfg.get("mean") or defaults["mean"], cfg.get("std") or defaults["std"]
    tf = create_transform(img_size, train=False, crop_pct=crop_pct, mean=mean, std=std)
    with blame("--data"):
        if holdout and args.split == "val":  # the run validated on the last images of its training split
            images = create_dataset(spec, "train", transform=tf, evaluation=True)
            train_part, dataset = hold_out(images, images, holdout)
        else:
            train_part, dataset = None, create_dataset(spec, args.split, transform=tf, evaluation=True)
    classes = model.default_cfg.get("num_classes")
    features = args.knn or args.linear_probe  # scored by its features, not its classifier
    if getattr(model, "num_classes", None) == 0 and not features:
        raise UsageError(f"--checkpoint {args.checkpoint or args.checkpoint_path}: {name} has no classifier (a "
                         "self-supervised run's backbone): score its features with --knn or --linear-probe, or "
                         "fine-tune it with python -m vitfast.train --init-checkpoint FILE")
    if features:
        k, t = args.knn_k or cfg.get("knn_k") or SSLOptions.knn_k, args.knn_t or cfg.get("knn_t") or SSLOptions.knn_t
        with blame("--data"):  # the memory bank: the training images the run did not hold out
            bank = train_part if train_part is not None else create_dataset(spec, "train", transform=tf,
                                                                            evaluation=True)
        bank_loader = DataLoader(bank, batch_size=args.batch_size, num_workers=args.workers)
    elif classes != dataset.num_classes:
        raise UsageError(f"--data {spec}: {dataset.num_classes} classes, but {name} predicts {classes} (for other "
                         "weights: --model-kwargs num_classes=N)")
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

    from vitfast.quant import convert_ptq, model_size_bytes, quantized_paths
    from vitfast.quant.fp8_chain import chain_path, convert_fp8, convertible_blocks

    # where FP8_E4M3_SCALED with static scales runs the FP8 chain: a model with plain blocks, on a device
    # that does not multiply FP8 better through Linear8 (compute capability 8.9)
    fp8_chain = chain_path(device) if convertible_blocks(model)[0] else None
    calib_steps = DEFAULT_CALIB_STEPS if args.calib_steps is None else args.calib_steps
    results, reference = {}, None
    calib, calibration = None, "dynamic"
    if calib_steps and any(r.is_scaled for r in recipes):
        calib = calibration_loader(spec, tf, args, train_part)
        used = min(calib_steps, len(calib))
        calibration = f"static, {used} batch{'es' if used != 1 else ''} of train"
        if used < calib_steps:
            print(f"vitfast.eval: warning: --calib-steps {calib_steps}: the training split holds only {used} "
                  f"batch{'es' if used != 1 else ''} of {args.batch_size}; calibrating on {used}", file=sys.stderr)
    probe = dict(epochs=args.probe_epochs or 100, lr=args.probe_lr or (1e-3,)) if args.linear_probe else None
    for fmt, recipe in zip(formats, recipes):
        scaled = recipe.is_scaled
        if calib is not None and recipe.is_scaled:
            progress.start_line(f"calibrate {fmt} ({calibration})")  # on a terminal: convert_ptq's bar
        chain = recipe.name == "FP8_E4M3_SCALED" and calib is not None and fp8_chain is not None
        at = f"on {device} at --batch-size {args.batch_size}"
        doing = f"calibrating {fmt} {at}" if calib is not None and scaled else f"converting the model to {fmt}"
        with out_of_memory(doing, "lower --batch-size, or --calib-steps 0 (dynamic scales)" if calib is not None and
                           scaled else "the model and its converted copy do not fit; use a device with more memory"):
            if fmt.lower() == "fp32":
                m = model
            elif chain:
                m = convert_fp8(model, calib, calib_steps)
            else:
                m = convert_ptq(model, recipe, calib_data=calib, calib_steps=calib_steps)
        with out_of_memory(f"evaluating {fmt} {at}", "lower --batch-size"):
            if features:
                exits, labels, ips, probe_lr = feature_scores(m, bank_loader, loader, device, dataset.num_classes, k,
                                                              t, fmt, probe)
            else:
                exits, labels, ips = collect_logits(m, loader, device, desc=f"eval {fmt}")
        logits = exits[-1]
        pred = logits.argmax(-1)
        reference = pred if reference is None and fmt.lower() == "fp32" else reference
        acc1, acc5 = accuracy(logits, labels)
        r = {"acc1": acc1, "acc5": acc5, "images_per_second": ips, "model_bytes": model_size_bytes(model, recipe),
             "count": len(labels)}
        if probe is not None:
            r["probe_lr"] = probe_lr
        if scaled:
            r["calibration"] = calibration
            r["linear_layers"] = quantized_paths(m, device)  # which product ran: real 8-bit or emulated
            if chain:
                r["fp8_chain"] = {"blocks": len(m.fp8_blocks), "path": fp8_chain}
        if reference is not None:
            r["agreement_with_fp32"] = 100.0 * (pred == reference).float().mean().item()
        if len(exits) > 1:
            r["exit_acc1"] = [accuracy(e, labels)[0] for e in exits]
        if args.per_class:
            r["per_class"] = per_class_report(pred, labels, dataset.classes)
        results[fmt.lower()] = r
        if len(exits) > 1 and fmt == formats[0]:
            results["dvt_budget_curve"] = dvt_curve(m, exits, labels, img_size, args.dvt_plot)

    split = f"{args.split}: held out of train by the run" if train_part is not None else args.split
    print(f"{name} on {spec} ({split}, {len(dataset)} images)")
    if args.knn:
        print(f"k-NN (k {k}, T {t:g}) on the features, memory bank: the {len(bank)} training images")
    elif args.linear_probe:
        rates = probe["lr"]
        lr = (f"lr {rates[0]:g}" if len(rates) == 1 else f"the lr of {len(rates)} ({rates[0]:g}..{rates[-1]:g}) "
              f"most accurate on a tenth of them held out")
        print(f"linear probe on the frozen features of the {len(bank)} training images ({probe['epochs']} "
              f"epochs of SGD, {lr}, on a cosine)")
    if weights:
        other = "; --raw: the trained ones" if weights.startswith("EMA") and not args.ema else ""
        print(f"weights: {weights}{other}")
    w = max([12] + [len(f) + 2 for f in results])
    print(f"{'format':<{w}}{'top-1 %':>9}{'top-5 %':>9}{'agree %':>9}{'size MB':>10}{'img/s':>10}")
    for fmt, r in results.items():
        if fmt == "dvt_budget_curve":
            continue
        agree = f"{r['agreement_with_fp32']:.2f}" if "agreement_with_fp32" in r else "-"
        print(f"{fmt:<{w}}{r['acc1']:>9.2f}{r['acc5']:>9.2f}{agree:>9}{r['model_bytes'] / 1e6:>10.2f}"
              f"{r['images_per_second']:>10.1f}")
        if "calibration" in r:
            print(f"{'':<{w}}activation scales: {r['calibration']}")
            paths = ", ".join(f"{n} on {p}" for p, n in r["linear_layers"].items())
            print(f"{'':<{w}}linear layers: {paths or 'none'}")
            if "fp8_chain" in r:
                c = r["fp8_chain"]
                print(f"{'':<{w}}FP8 chain: {c['blocks']} blocks on {c['path']} (the rest bf16)")
        if "probe_lr" in r and len(probe["lr"]) > 1:
            print(f"{'':<{w}}linear probe lr: {r['probe_lr']:g}")
        if "exit_acc1" in r:
            print(f"{'':<{w}}per exit top-1: {', '.join(f'{a:.2f}' for a in r['exit_acc1'])}")
        for row in r.get("per_class", []):
            print(f"{'':<{w}}{row['class']:<20} P {row['precision']:.3f}  R {row['recall']:.3f}  "
                  f"F1 {row['f1']:.3f}  n {row['support']}")
    if args.attention_maps:
        from vitfast.visualize import save_attention_rollouts

        if args.attention_maps > len(dataset):
            print(f"vitfast.eval: warning: --attention-maps {args.attention_maps}: the {args.split} split holds "
                  f"only {len(dataset)} images; writing {len(dataset)}", file=sys.stderr)
        paths = save_attention_rollouts(model, dataset, args.attention_maps, args.maps_dir or DEFAULT_MAPS_DIR,
                                        device, mean=mean, std=std, desc="attention maps")
        print(f"attention rollout maps: {', '.join(paths)}")
    if args.json:
        atomic_write(args.json, lambda tmp: open(tmp, "w").write(json.dumps(results, indent=2)))
    return results


def feature_scores(model, bank_loader, loader, device, num_classes, k, t, fmt, probe=None):
    """([scores (N, classes)], labels, images/s of the evaluated split's features, the probe's lr): k-NN votes
    among the training features, or (probe: {"epochs", "lr"}) a linear classifier's logits trained on them."""
    import time

    from vitfast.training.knn import extract_features, knn_classify
    from vitfast.training.linear_probe import linear_probe

    bank, bank_labels = extract_features(model, bank_loader, device, desc=f"features {fmt}: training split",
                                         normalize=probe is None)
    start = time.perf_counter()
    feats, labels = extract_features(model, loader, device, desc=f"eval {fmt}", normalize=probe is None)
    ips = len(labels) / max(time.perf_counter() - start, 1e-9)
    if probe is not None:
        logits, _, lr = linear_probe(bank, bank_labels, feats, num_classes, probe["epochs"], probe["lr"])
        return [logits], labels, ips, lr
    return [knn_classify(bank, bank_labels, feats, num_classes, k, t)], labels, ips, None


def dvt_curve(model, exits, labels, img_size, plot_path=None, points=12):
    """Budgeted classification: thresholds fit on one half of the split for each budget between the
    first and the last exit's cost, accuracy measured on the other half."""
    from vitfast.models.dvt import evaluate_thresholds, fit_thresholds

    macs = model.exit_macs(img_size)
    n = len(labels)
    fit, test = torch.arange(n) % 2 == 0, torch.arange(n) % 2 == 1
    curve = []
    for i in range(points):
        budget = macs[0] + (macs[-1] - macs[0]) * i / (points - 1)
        fitted = fit_thresholds([e[fit] for e in exits], labels[fit], budget, macs)
        acc, cost, fractions = evaluate_thresholds([e[test] for e in exits], labels[test], fitted.thresholds, macs)
        curve.append({"budget_gmacs": budget / 1e9, "fit_gmacs": fitted.mean_macs / 1e9, "gmacs": cost / 1e9,
                      "acc1": 100.0 * acc,
                      "thresholds": list(fitted.thresholds), "exit_fractions": list(fractions)})
    if plot_path:
        plot_curve([c["gmacs"] for c in curve], [c["acc1"] for c in curve], plot_path)
        print(f"DVT budget curve (top-1 against GMACs per image, {points} budgets): {plot_path}")
    return curve


def plot_curve(xs, ys, path, size=(480, 360), margin=48):
    """Accuracy against GMACs as a PNG, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.font = ImageFont.load_default(size=13)  # the 10 px default closes up spaces ("vs cost" read "vscost")
    w, h = size[0] - 2 * margin, size[1] - 2 * margin
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pts = [(margin + w * (x - x0) / (x1 - x0), size[1] - margin - h * (y - y0) / (y1 - y0)) for x, y in zip(xs, ys)]
    draw.rectangle([margin, margin, margin + w, margin + h], outline="black")
    draw.line(pts, fill="navy", width=2)
    for x, y in pts:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="navy")
    draw.text((margin, size[1] - margin + 8), f"{x0:.3g}", fill="black")
    draw.text((margin + w - 30, size[1] - margin + 8), f"{x1:.3g}", fill="black")
    draw.text((size[0] // 2 - 80, size[1] - 22), "average GMACs per image", fill="black")
    draw.text((4, margin), f"{y1:.1f}%", fill="black")
    draw.text((4, margin + h - 10), f"{y0:.1f}%", fill="black")
    draw.text((margin, 14), "DVT budgeted classification: top-1 % against cost", fill="black")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


if __name__ == "__main__":
    run("vitfast.eval", main)
