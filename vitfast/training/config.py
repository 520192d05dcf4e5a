"""The training configuration: one grouped argparse parser (timm-style kebab-case flags) whose
defaults a YAML/JSON file (-c) replaces and `--set key.sub=value` overrides. Unknown keys or flags are
errors that name the nearest valid one; the resolved config is a flat dict saved as config.yaml."""
import argparse
import difflib
import json
import os
from importlib import resources

import yaml

# (group, flag, type, default, help). Flag "--lr" is config key "lr"; "--model-kwargs" is "model_kwargs".
OPTIONS = [
    ("model", "--model", str, "vit_tiny_patch16_224", "registered model name (vitfast.list_models())"),
    ("model", "--model-kwargs", "kv", {}, "create_model overrides, e.g. patch_size=4,depth=6"),
    ("model", "--img-size", int, None, "input resolution (default: the model's)"),
    ("model", "--drop-path", float, None, "stochastic depth rate (drop_path_rate)"),
    ("model", "--init-checkpoint", str, None, "initial weights: timm/official .pth, Google .npz, .safetensors"),
    ("model", "--backend", str, None, "attention implementation: eager | sdpa | vitfast"),
    ("data", "--data", str, "builtin", "builtin | cifar10:DIR | cifar100:DIR | folder:DIR | paths:DIR"),
    ("data", "--download", bool, False, "allow downloading CIFAR (never otherwise)"),
    ("data", "--strict-data", bool, False, "fail on an unreadable image instead of skipping it"),
    ("data", "--workers", int, 0, "data loading processes per rank"),
    ("data", "--crop-pct", float, None, "eval resize = img_size / crop_pct (default: the model's)"),
    ("data", "--mean", "floats", None, "normalisation mean (default: the model's)"),
    ("data", "--std", "floats", None, "normalisation std (default: the model's)"),
    ("augment", "--scale", "floats", [0.08, 1.0], "RandomResizedCrop scale range"),
    ("augment", "--hflip", float, 0.5, "horizontal flip probability"),
    ("augment", "--aa", str, None, "RandAugment, e.g. rand-m9-mstd0.5-inc1"),
    ("augment", "--color-jitter", float, 0.0, "colour jitter strength"),
    ("augment", "--reprob", float, 0.0, "random erasing probability"),
    ("augment", "--mixup", float, 0.0, "mixup alpha (0: off)"),
    ("augment", "--cutmix", float, 0.0, "cutmix alpha (0: off)"),
    ("augment", "--smoothing", float, 0.1, "label smoothing"),
    ("augment", "--repeated-aug", int, 0, "repeated augmentation count (DeiT: 3)"),
    ("optim", "--opt", str, "adamw", "adamw | sgd | lamb"),
    ("optim", "--lr", float, 1e-3, "peak learning rate (for the --lr-base-size batch, if set)"),
    ("optim", "--lr-base-size", int, None, "scale lr by global batch / this (DeiT: 512)"),
    ("optim", "--weight-decay", float, 0.05, "decoupled weight decay (not on biases, norms, tokens, pos-embeds)"),
    ("optim", "--momentum", float, 0.9, "SGD momentum"),
    ("optim", "--betas", "floats", [0.9, 0.999], "Adam/LAMB betas"),
    ("optim", "--clip-grad", float, None, "clip the gradient norm to this"),
    ("optim", "--grad-accum-steps", int, 1, "micro-batches per optimizer step"),
    ("schedule", "--sched", str, "cosine", "cosine | linear | step | constant (per step)"),
    ("schedule", "--epochs", int, None, "training length in epochs"),
    ("schedule", "--steps", int, None, "training length in optimizer steps (instead of epochs)"),
    ("schedule", "--warmup", float, 0, "linear warmup: epochs with --epochs, steps with --steps"),
    ("schedule", "--warmup-lr", float, 1e-6, "learning rate at the start of warmup"),
    ("schedule", "--min-lr", float, 1e-5, "final learning rate of cosine/linear decay"),
    ("schedule", "--decay-milestones", "floats", [0.5, 0.75], "step schedule: fractions of training"),
    ("schedule", "--decay-rate", float, 0.1, "step schedule: factor at each milestone"),
    ("precision", "--amp", str, "none", "autocast: none | bf16 | fp16 (fp16 with a GradScaler)"),
    ("precision", "--quant", str, None, "quantization-aware training: FP16_16, FP16_32, TF32, BF16, FP8_E4M3, FP8_E5M2, "
                                                 "INT8 (dynamic scales), float(e=,m=), ..."),
    ("precision", "--quant-grad", str, None, "also quantize gradients to this format"),
    ("precision", "--compile", bool, False, "torch.compile the model"),
    ("precision", "--grad-checkpointing", bool, False, "recompute each block's activations in the backward pass "
                                                        "(activation checkpointing: less memory, ~1/3 more compute)"),
    ("precision", "--ema", float, 0.0, "EMA decay of the weights (0: off; DeiT: 0.99996)"),
    ("distill", "--teacher", str, None, "torchvision/timm model name, or a vitfast checkpoint"),
    ("distill", "--teacher-checkpoint", str, None, "weights for a --teacher given by name"),
    ("distill", "--distill-type", str, "hard", "hard | soft"),
    ("distill", "--distill-alpha", float, 0.5, "weight of the distillation loss"),
    ("distill", "--distill-tau", float, 1.0, "soft distillation temperature"),
    ("run", "--batch-size", int, 128, "global batch size (all ranks, one optimizer step)"),
    ("run", "--eval-batch-size", int, None, "evaluation batch size per rank (default: --batch-size)"),
    ("run", "--output", str, None, "output directory (default runs/<date-time>-<model>)"),
    ("run", "--resume", str, None, "auto (the output directory's last checkpoint) or a checkpoint path"),
    ("run", "--save-every", int, 0, "also checkpoint every N optimizer steps (0: at epoch ends only)"),
    ("run", "--eval-every", int, 1, "evaluate every N epochs"),
    ("run", "--log-every", int, 20, "log every N optimizer steps"),
    ("run", "--device", str, None, "cpu | cuda | cuda:N (default: cuda when available)"),
    ("run", "--seed", int, 0, "seed of every random generator"),
    ("run", "--deterministic", bool, False, "deterministic algorithms and per-sample seeded augmentation"),
    ("run", "--ptq-report", "strs", ["fp16_32", "fp16_16", "bf16"], "formats evaluated after training (PTQ)"),
    ("run", "--wandb", bool, False, "log to Weights & Biases when installed (offline works)"),
    ("run", "--max-time", float, None, "stop training after this many seconds (then evaluate)"),
]
KEYS = {flag[2:].replace("-", "_"): (group, kind, default) for group, flag, kind, default, _ in OPTIONS}
DEFAULTS = {k: default for k, (_, _, default) in KEYS.items()}


class ConfigError(ValueError):
    pass


def nearest(key, choices):
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.4)
    return f" (did you mean {close[0]!r}?)" if close else ""


def split_top_level(text):
    """'a,float(e=4,m=3),b' -> ['a', 'float(e=4,m=3)', 'b']: commas inside parentheses stay."""
    parts, depth, current = [], 0, ""
    for ch in str(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def parse_value(key, text):
    """A command-line / --set string -> the option's type."""
    kind = KEYS[key][1]
    try:
        if kind == "kv":
            return dict(parse_kv(text))
        if kind == "floats":
            return [float(v) for v in str(text).split(",") if v.strip()]
        if kind == "strs":
            return split_top_level(text)
        if kind is bool:
            if str(text).lower() in ("1", "true", "yes", "on"):
                return True
            if str(text).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if text is None or str(text).lower() == "none":
            return None
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: cannot read {text!r} as {getattr(kind, '__name__', kind)}") from None


def parse_kv(text):
    """'a=1,b=x' -> [('a', 1), ('b', 'x')], values read as YAML scalars."""
    out = []
    for item in [t for t in str(text).split(",") if t.strip()]:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out.append((k.strip(), yaml.safe_load(v)))
    return out


def packaged_configs():
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("vitfast.configs").iterdir()
                  if p.name.endswith((".yaml", ".json")))


def read_config_file(name):
    """A config file path, or the name of a config shipped in vitfast/configs."""
    if os.path.isfile(name):
        with open(name) as f:
            data = json.load(f) if name.endswith(".json") else yaml.safe_load(f)
    else:
        for ext in (".yaml", ".json"):
            res = resources.files("vitfast.configs") / f"{name}{ext}"
            if res.is_file():
                data = yaml.safe_load(res.read_text())
                break
        else:
            raise ConfigError(f"-c/--config: {name!r} is neither a file nor a packaged config; packaged: "
                              f"{', '.join(packaged_configs())}{nearest(name, packaged_configs())}")
    if not isinstance(data, dict):
        raise ConfigError(f"config {name!r} must hold a mapping of keys to values")
    from .myrtle import is_myrtle_config, translate_myrtle

    return translate_myrtle(data, os.path.dirname(os.path.abspath(name))) if is_myrtle_config(data) else data


def check_keys(data, source):
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}{nearest(key, KEYS)}")


# Keys that are alternatives: setting one at a later layer (file < flag < --set) clears the other.
_EXCLUSIVE = {"epochs": "steps", "steps": "epochs"}


def _layer(config, updates):
    for key, value in updates.items():
        if key in _EXCLUSIVE and value is not None:
            config[_EXCLUSIVE[key]] = None
        config[key] = value


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m vitfast.train", allow_abbrev=False,
                                     description="Train a vitfast model. With no arguments: a small ViT on the "
                                                 "built-in dataset, then a post-training quantization table.")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="YAML/JSON config file or packaged config name; sets defaults (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (dots allowed: model_kwargs.depth=6)")
    groups = {}
    for group, flag, kind, default, help_text in OPTIONS:
        g = groups.setdefault(group, parser.add_argument_group(group))
        if kind is bool:
            g.add_argument(flag, nargs="?", const="true", default=None, help=help_text)
        else:
            g.add_argument(flag, default=None, help=f"{help_text} (default: {default})")
    return parser


def resolve(argv=None, base=None):
    """argv -> the resolved flat config dict: defaults < base < config files < flags < --set."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [a for _, a, _, _, _ in OPTIONS] + ["--config", "--set"]
        raise ConfigError(f"unknown argument {unknown[0]!r}{nearest(unknown[0].split('=')[0], flags)}")
    config = dict(DEFAULTS)
    if base:
        check_keys(base, "base config")
        _layer(config, base)
    for name in args.config:
        data = read_config_file(name)
        check_keys(data, f"config {name!r}")
        _layer(config, data)
    flags = {key: parse_value(key, getattr(args, key)) for key in KEYS if getattr(args, key) is not None}
    if "epochs" in flags and "steps" in flags:
        raise ConfigError("give --epochs or --steps, not both")
    _layer(config, flags)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        dotted, value = item.split("=", 1)
        key, *sub = dotted.strip().split(".")
        if key not in KEYS:
            raise ConfigError(f"--set: unknown key {key!r}{nearest(key, KEYS)}")
        if sub:
            if not isinstance(config.get(key), dict):
                raise ConfigError(f"--set: {key!r} has no sub-keys")
            config[key] = {**config[key], ".".join(sub): yaml.safe_load(value)}
        else:
            _layer(config, {key: parse_value(key, value)})
    return validate(config)


def validate(c):
    choices = {"opt": ("adamw", "sgd", "lamb"), "sched": ("cosine", "linear", "step", "constant"),
               "amp": ("none", "bf16", "fp16"), "distill_type": ("hard", "soft")}
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {c[key]!r}{nearest(str(c[key]), allowed)}")
    if c["epochs"] is not None and c["steps"] is not None:
        raise ConfigError("give --epochs or --steps, not both")
    for key in ("batch_size", "grad_accum_steps"):
        if c[key] is None or c[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {c[key]}")
    if c["batch_size"] % c["grad_accum_steps"]:
        raise ConfigError(f"batch_size ({c['batch_size']}) must be divisible by grad_accum_steps ({c['grad_accum_steps']})")
    if c["resume"] not in (None, "auto") and not os.path.isfile(c["resume"]):
        raise ConfigError(f"resume: no checkpoint at {c['resume']!r} (use 'auto' or a file path)")
    return c


def dump(config, path):
    from ..models.checkpoint import atomic_write

    def write(tmp):
        with open(tmp, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    atomic_write(path, write)
