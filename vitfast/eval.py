"""python -m vitfast.eval: evaluate a checkpoint in full precision and in every quantized format side
by side (post-training quantization), with per-class results, DVT's budgeted early-exit curve and
attention-rollout maps.

    python -m vitfast.eval --checkpoint runs/x/checkpoint-best.pt --quant fp32,fp16_32,fp16_16,bf16,fp8_e4m3
    python -m vitfast.eval --model vit_base_patch32_224 --checkpoint-path ViT-B_32.npz --data cifar10:DIR
"""
import argparse
import json
import sys

import torch
from torch.utils.data import DataLoader

import vitfast
from vitfast.data import create_dataset, create_transform
from vitfast.models import get_model_config, load_checkpoint
from vitfast.models.checkpoint import atomic_write
from vitfast.training.config import ConfigError, parse_kv, split_top_level
from vitfast.training.evaluate import accuracy, collect_logits
from vitfast.training.state import load_state


def build_parser():
    p = argparse.ArgumentParser(prog="python -m vitfast.eval", description=__doc__.splitlines()[0], allow_abbrev=False)
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", help="a vitfast training checkpoint (checkpoint-best.pt / -last.pt)")
    src.add_argument("--model", help="registered model name, with --checkpoint-path for timm/Google/official files")
    src.add_argument("--checkpoint-path", help="weights for --model: .pth, .npz or .safetensors")
    src.add_argument("--model-kwargs", default="", help="create_model overrides, e.g. img_size=384")
    src.add_argument("--ema", action="store_true", help="evaluate the checkpoint's EMA weights")
    data = p.add_argument_group("data")
    data.add_argument("--data", help="dataset spec (default: the checkpoint's training data)")
    data.add_argument("--split", default="val", choices=["val", "test"])
    data.add_argument("--batch-size", type=int, default=128)
    data.add_argument("--workers", type=int, default=0)
    data.add_argument("--img-size", type=int, default=None)
    data.add_argument("--crop-pct", type=float, default=None)
    out = p.add_argument_group("report")
    out.add_argument("--quant", default="fp32", help="comma-separated formats: fp32,fp16_32,fp16_16,bf16,tf32,"
                                                     "fp8_e4m3,fp8_e5m2,int8,fp8_e4m3_scaled,fp8_e5m2_scaled,"
                                                     "float(e=..,m=..),fixed(wl=..,fl=..)")
    out.add_argument("--calib-steps", type=int, default=8, metavar="N",
                     help="scaled formats (int8, fp8_*_scaled): calibrate static activation scales on N batches of "
                          "the training split (0: dynamic per-batch scales)")
    out.add_argument("--per-class", action="store_true", help="print precision/recall/F1 per class")
    out.add_argument("--json", help="write the results to this JSON file")
    out.add_argument("--dvt-plot", help="DVT: write the budgeted accuracy-vs-GMACs curve to this PNG")
    out.add_argument("--attention-maps", type=int, default=0, metavar="N", help="write attention rollout PNGs of N images")
    out.add_argument("--maps-dir", default="attention_maps")
    out.add_argument("--device", default=None)
    return p


def load_model(args):
    """(model, config of its training run or {})."""
    if args.checkpoint:
        state = load_state(args.checkpoint) if args.checkpoint.endswith((".pt", ".pth")) else None
        if not isinstance(state, dict) or "config" not in state:
            raise ConfigError(f"--checkpoint {args.checkpoint!r} is not a vitfast training checkpoint; "
                              "use --model NAME --checkpoint-path FILE for other weights")
        cfg = state["config"]
        weights = state["ema"] if args.ema and state.get("ema") else state["model"]
        head = [v for k, v in weights.items() if k.endswith("head.weight")]
        kwargs = dict(cfg["model_kwargs"], **({"num_classes": head[0].shape[0]} if head else {}))
        if cfg.get("img_size"):
            kwargs["img_size"] = cfg["img_size"]
        model = vitfast.create_model(cfg["model"], **kwargs)
        model.load_state_dict(weights)
        return model, cfg
    if not args.model:
        raise ConfigError("give --checkpoint, or --model NAME (with --checkpoint-path FILE)")
    model = vitfast.create_model(args.model, **dict(parse_kv(args.model_kwargs)))
    if args.checkpoint_path:
        load_checkpoint(model, args.checkpoint_path)
    return model, {}


def calibration_loader(spec, transform, args):
    """Batches for static activation scales: the training split (never the evaluated one) through the
    evaluation transform, in a fixed shuffled order so the same N batches are drawn on every run."""
    try:
        dataset = create_dataset(spec, "train", transform=transform)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--calib-steps {args.calib_steps}: calibration reads the training split of {spec!r}, "
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
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int((labels == c).sum())})
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_model(args)
    model.to(device).eval()
    name = cfg.get("model") or args.model
    defaults = get_model_config(name)
    spec = args.data or cfg.get("data")
    if not spec:
        raise ConfigError("--data is required for weights that carry no training config")
    img_size = args.img_size or model.default_cfg["input_size"][-1]
    crop_pct = args.crop_pct or cfg.get("crop_pct") or (1.0 if img_size < 64 else defaults["crop_pct"])
    tf = create_transform(img_size, train=False, crop_pct=crop_pct, mean=cfg.get("mean") or defaults["mean"],
                          std=cfg.get("std") or defaults["std"])
    dataset = create_dataset(spec, args.split, transform=tf)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

    from vitfast.quant import convert_ptq, model_size_bytes, parse_recipe

    if args.calib_steps < 0:
        raise ConfigError(f"--calib-steps must be >= 0 (0: dynamic scales), got {args.calib_steps}")
    results, reference = {}, None
    formats = split_top_level(args.quant)
    recipes = [parse_recipe(fmt, "--quant") for fmt in formats]
    calib = None
    if args.calib_steps and any(r.is_scaled for r in recipes):
        calib = calibration_loader(spec, tf, args)
    for fmt, recipe in zip(formats, recipes):
        scaled = recipe.is_scaled
        m = model if fmt.lower() == "fp32" else convert_ptq(model, recipe, calib_data=calib, calib_steps=args.calib_steps)
        exits, labels, ips = collect_logits(m, loader, device)
        logits = exits[-1]
        pred = logits.argmax(-1)
        reference = pred if reference is None and fmt.lower() == "fp32" else reference
        acc1, acc5 = accuracy(logits, labels)
        r = {"acc1": acc1, "acc5": acc5, "images_per_second": ips, "model_bytes": model_size_bytes(model, recipe),
             "count": len(labels)}
        if scaled:
            r["calibration"] = f"static, {args.calib_steps} batches of train" if calib is not None else "dynamic"
        if reference is not None:
            r["agreement_with_fp32"] = 100.0 * (pred == reference).float().mean().item()
        if len(exits) > 1:
            r["exit_acc1"] = [accuracy(e, labels)[0] for e in exits]
        if args.per_class:
            r["per_class"] = per_class_report(pred, labels, dataset.classes)
        results[fmt.lower()] = r
        if len(exits) > 1 and fmt == formats[0]:
            results["dvt_budget_curve"] = dvt_curve(m, exits, labels, img_size, args.dvt_plot)

    print(f"{name} on {spec} ({args.split}, {len(dataset)} images)")
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
        if "exit_acc1" in r:
            print(f"{'':<{w}}per exit top-1: {', '.join(f'{a:.2f}' for a in r['exit_acc1'])}")
        for row in r.get("per_class", []):
            print(f"{'':<{w}}{row['class']:<20} P {row['precision']:.3f}  R {row['recall']:.3f}  "
                  f"F1 {row['f1']:.3f}  n {row['support']}")
    if args.attention_maps:
        from vitfast.visualize import save_attention_rollouts

        paths = save_attention_rollouts(model, dataset, args.attention_maps, args.maps_dir, device)
        print(f"attention rollout maps: {', '.join(paths)}")
    if args.json:
        atomic_write(args.json, lambda tmp: open(tmp, "w").write(json.dumps(results, indent=2)))
    return results


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
    return curve


def plot_curve(xs, ys, path, size=(480, 360), margin=48):
    """Accuracy against GMACs as a PNG, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
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
    draw.text((size[0] // 2 - 70, size[1] - 20), "average GMACs per image", fill="black")
    draw.text((4, margin), f"{y1:.1f}%", fill="black")
    draw.text((4, margin + h - 10), f"{y0:.1f}%", fill="black")
    draw.text((margin, 12), "DVT budgeted classification: top-1 vs cost", fill="black")
    img.save(path)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        sys.exit(f"vitfast.eval: {e}")
