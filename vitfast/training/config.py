"""The training configuration: one grouped argparse parser (timm-style kebab-case flags) whose
defaults a YAML/JSON file (-c) replaces and `--set key.sub=value` overrides. Unknown keys or flags are
errors that name the nearest valid one; the resolved config is a flat dict saved as config.yaml."""
import json
import os
import re
from importlib import resources

import yaml

from ..cli import ArgumentParser, UsageError, nearest, one_line
from .checks import AT_LEAST_1, FRACTION, NON_NEGATIVE, OPEN_UNIT, POSITIVE, PROBABILITY, Range, check_config, \
    check_value, coerce

# (group, flag, type, default, check, help). Flag "--lr" is config key "lr"; "--model-kwargs" is
# "model_kwargs". check: a Range (each element, for lists) or a tuple of the allowed names. An option
# whose default is None may be null ("none" on the command line).
OPTIONS = [
    ("model", "--model", str, "vit_pico_patch4_32", None, "registered model name (python -m vitfast.list)"),
    ("model", "--model-kwargs", "kv", {}, None, "create_model overrides, e.g. patch_size=4,depth=6"),
    ("model", "--img-size", int, None, AT_LEAST_1, "input resolution (default: the model's)"),
    ("model", "--drop-path", float, None, FRACTION, "stochastic depth rate, drop_path_rate (default: the model's)"),
    ("model", "--init-checkpoint", str, None, None, "initial weights: timm/official .pth, Google .npz, .safetensors; "
                                                    "every tensor must fit the model but the classifier head"),
    ("model", "--init-weights", str, "reported", ("reported", "ema", "raw"),
     "which weights of a vitfast run's --init-checkpoint: reported (the EMA's where the run kept one), ema, raw"),
    ("model", "--backend", str, None, ("eager", "sdpa", "vitfast"), "eager | sdpa | vitfast (default: sdpa)"),
    ("data", "--data", str, "builtin", None, "builtin | cifar10:DIR | cifar100:DIR | folder:DIR | paths:DIR"),
    ("data", "--download", bool, False, None, "allow downloading CIFAR (never otherwise)"),
    ("data", "--strict-data", bool, False, None, "fail on an unreadable image instead of skipping it"),
    ("data", "--workers", int, 0, NON_NEGATIVE, "data loading processes per rank"),
    ("data", "--holdout", int, None, AT_LEAST_1, "validate on the last N training images (N / classes of each "
                                                 "class) instead of the dataset's own validation split"),
    ("data", "--data-on-device", bool, False, None, "decode the training images once, keep them on the device and "
                                                    "crop/flip/RandAugment/erase them there in batches (small "
                                                    "datasets; no --color-jitter); with --ssl, the multi-crop "
                                                    "augmentation in batches"),
    ("data", "--crop-pct", float, None, OPEN_UNIT, "eval resize = img_size / crop_pct (default: the model's)"),
    ("data", "--mean", "floats", None, None, "normalisation mean, R,G,B (default: the model's)"),
    ("data", "--std", "floats", None, POSITIVE, "normalisation std, R,G,B (default: the model's)"),
    ("augment", "--scale", "floats", [0.08, 1.0], OPEN_UNIT, "RandomResizedCrop scale range lo,hi"),
    ("augment", "--hflip", float, 0.5, PROBABILITY, "horizontal flip probability"),
    ("augment", "--aa", str, None, None, "RandAugment, e.g. rand-m9-mstd0.5-inc1 (default: off)"),
    ("augment", "--color-jitter", float, 0.0, NON_NEGATIVE, "colour jitter strength"),
    ("augment", "--reprob", float, 0.0, PROBABILITY, "random erasing probability"),
    ("augment", "--mixup", float, 0.0, NON_NEGATIVE, "mixup alpha (0: off)"),
    ("augment", "--cutmix", float, 0.0, NON_NEGATIVE, "cutmix alpha (0: off)"),
    ("augment", "--smoothing", float, 0.1, FRACTION, "label smoothing"),
    ("augment", "--repeated-aug", int, 0, NON_NEGATIVE, "repeated augmentation count (DeiT: 3)"),
    ("optim", "--opt", str, "adamw", ("adamw", "sgd", "lamb"), "adamw | sgd | lamb"),
    ("optim", "--lr", float, 1e-3, POSITIVE, "peak learning rate (for the --lr-base-size batch, if set)"),
    ("optim", "--lr-base-size", int, None, AT_LEAST_1, "scale lr by global batch / this (DeiT: 512; default: no "
                                                       "scaling)"),
    ("optim", "--weight-decay", float, 0.05, NON_NEGATIVE, "decoupled weight decay (not on biases, norms, tokens, "
                                                           "pos-embeds)"),
    ("optim", "--momentum", float, 0.9, FRACTION, "SGD momentum (Nesterov when > 0)"),
    ("optim", "--betas", "floats", [0.9, 0.999], FRACTION, "Adam/LAMB betas"),
    ("optim", "--clip-grad", float, None, POSITIVE, "clip the gradient norm to this (default: off)"),
    ("optim", "--grad-accum-steps", int, 1, AT_LEAST_1, "micro-batches per optimizer step"),
    ("schedule", "--sched", str, "cosine", ("cosine", "linear", "step", "constant"),
     "cosine | linear | step | constant (per step)"),
    ("schedule", "--epochs", int, None, AT_LEAST_1, "training length in epochs, unless --steps"),
    ("schedule", "--steps", int, None, AT_LEAST_1, "training length in optimizer steps, instead of --epochs"),
    ("schedule", "--extend-epochs", int, None, AT_LEAST_1, "with --resume: lengthen the run's schedule by N epochs "
                                                          "(recorded in the run; the learning rate follows the "
                                                          "longer schedule from the step resumed)"),
    ("schedule", "--extend-steps", int, None, AT_LEAST_1, "with --resume: lengthen a --steps run's schedule by N "
                                                         "optimizer steps (as --extend-epochs)"),
    ("schedule", "--warmup-epochs", float, 0.0, NON_NEGATIVE, "linear warmup in epochs, rounded to whole steps "
                                                              "(also with --steps)"),
    ("schedule", "--warmup-steps", int, None, NON_NEGATIVE, "linear warmup in optimizer steps, instead of "
                                                            "--warmup-epochs"),
    ("schedule", "--warmup-lr", float, 1e-6, NON_NEGATIVE, "learning rate at the start of warmup"),
    ("schedule", "--min-lr", float, 1e-5, NON_NEGATIVE, "final learning rate of cosine/linear decay"),
    ("schedule", "--decay-milestones", "floats", [0.5, 0.75], Range(0, 1, True, True),
     "step schedule: fractions of training"),
    ("schedule", "--decay-rate", float, 0.1, POSITIVE, "step schedule: factor at each milestone"),
    ("precision", "--amp", str, "none", ("none", "bf16", "fp16"), "autocast: none | bf16 | fp16 (fp16 with a "
                                                                  "GradScaler)"),
    ("precision", "--quant", str, None, None, "quantization-aware training: FP16_16, FP16_32, TF32, BF16, FP8_E4M3, "
                                              "FP8_E5M2, INT8 (dynamic scales), float(e=,m=), ... (default: off)"),
    ("precision", "--quant-grad", str, None, None, "with --quant: also round gradients to this format"),
    ("precision", "--compile", bool, False, None, "torch.compile the model"),
    ("precision", "--grad-checkpointing", bool, False, None, "recompute each block's activations in the backward "
                                                             "pass (activation checkpointing: less memory, ~1/3 "
                                                             "more compute)"),
    ("precision", "--ema", float, 0.0, FRACTION, "EMA decay of the weights (0: off; DeiT: 0.99996)"),
    ("distill", "--teacher", str, None, None, "torchvision/timm model name (with --teacher-checkpoint), or a "
                                              "vitfast checkpoint or model.safetensors"),
    ("distill", "--teacher-checkpoint", str, None, None, "weights for a --teacher given by name"),
    ("distill", "--teacher-weights", str, "reported", ("reported", "ema", "raw"),
     "which weights of a vitfast run's checkpoint as --teacher: reported (the EMA's where the run kept one), "
     "ema, raw"),
    ("distill", "--teacher-random-init", bool, False, None, "accept a --teacher given by name with random weights "
                                                            "(no --teacher-checkpoint): for smoke tests only"),
    ("distill", "--distill-type", str, "hard", ("hard", "soft"), "hard | soft"),
    ("distill", "--distill-alpha", float, 0.5, PROBABILITY, "weight of the distillation loss"),
    ("distill", "--distill-tau", float, 1.0, POSITIVE, "soft distillation temperature"),
    ("ssl", "--ssl", str, None, ("dino", "swav"), "self-supervised pretraining instead of supervised: dino | swav "
                                                   "(no labels used; validated by k-NN on the training split)"),
    ("ssl", "--num-crops", "ints", None, AT_LEAST_1, "crops per image in each group, global first (VISSL's "
                                                     "num_crops; DINO: 2,8; SwAV: 2,4)"),
    ("ssl", "--size-crops", "ints", None, AT_LEAST_1, "crop size of each group in px (VISSL's size_crops; default: "
                                                      "DINO's 224,96 / SwAV's 160,96 as fractions of 224 of the "
                                                      "image size, in whole patches)"),
    ("ssl", "--crop-scales", "pairs", None, None, "area range of each group, lo,hi,lo,hi (VISSL's crop_scales; "
                                                  "DINO: 0.4,1,0.05,0.4; SwAV: 0.08,1,0.05,0.14)"),
    ("ssl", "--crop-color-jitter", "floats", None, NON_NEGATIVE, "brightness,contrast,saturation,hue of the crops' "
                                                                 "colour jitter, applied with p 0.8 (DINO: "
                                                                 "0.4,0.4,0.2,0.1; SwAV: 0.8,0.8,0.8,0.2)"),
    ("ssl", "--crop-grayscale", float, 0.2, PROBABILITY, "probability that a crop is made grayscale (DINO, SwAV: "
                                                         "0.2)"),
    ("ssl", "--total-num-crops", int, None, AT_LEAST_1, "VISSL's total_num_crops: checked against --num-crops"),
    ("ssl", "--head-hidden-dim", int, None, AT_LEAST_1, "DINO head's hidden width (default: 2048, scaled down "
                                                        "for models narrower than 384)"),
    ("ssl", "--head-bottleneck-dim", int, None, AT_LEAST_1, "DINO head's bottleneck (default: 256, scaled as "
                                                            "the hidden width)"),
    ("ssl", "--head-out-dim", int, None, AT_LEAST_1, "DINO head's output dimension (default: 65536, scaled "
                                                     "with the square of the model's width below 384)"),
    ("ssl", "--norm-last-layer", bool, True, None, "DINO: fix the weight norm of the head's last layer"),
    ("ssl", "--freeze-last-layer-epochs", float, 1.0, NON_NEGATIVE, "DINO: keep the head's last layer fixed for "
                                                                    "the first N epochs"),
    ("ssl", "--student-temp", float, 0.1, POSITIVE, "DINO: student softmax temperature"),
    ("ssl", "--teacher-temp", float, 0.07, POSITIVE, "DINO: teacher temperature after its warmup"),
    ("ssl", "--warmup-teacher-temp", float, 0.04, POSITIVE, "DINO: teacher temperature at the start"),
    ("ssl", "--warmup-teacher-temp-epochs", float, None, NON_NEGATIVE, "DINO: epochs of linear teacher "
                                                                       "temperature warmup (default: 10%% of the "
                                                                       "run, DINO's 30 of 300)"),
    ("ssl", "--center-momentum", float, 0.9, FRACTION, "DINO: momentum of the teacher output's centre"),
    ("ssl", "--teacher-momentum", float, 0.996, FRACTION, "DINO: teacher EMA momentum at the start, raised to 1 "
                                                          "on a cosine"),
    ("ssl", "--weight-decay-end", float, None, NON_NEGATIVE, "weight decay at the end of a cosine from "
                                                             "--weight-decay (DINO: 0.04 -> 0.4; default: "
                                                             "constant)"),
    ("ssl", "--head-dims", "ints", None, AT_LEAST_1, "SwAV: VISSL's swav_head dims, the model's width first "
                                                     "(default: width,2048,128, the hidden scaled down below 384)"),
    ("ssl", "--head-use-bn", bool, True, None, "SwAV: BatchNorm between the head's layers (VISSL's use_bn)"),
    ("ssl", "--num-clusters", "ints", [3000], AT_LEAST_1, "SwAV: prototypes of each set (VISSL's num_clusters; "
                                                          "several sets: 3000,3000)"),
    ("ssl", "--swav-temp", float, 0.1, POSITIVE, "SwAV: softmax temperature of the predictions"),
    ("ssl", "--sinkhorn-epsilon", float, 0.05, POSITIVE, "SwAV: Sinkhorn-Knopp regularisation"),
    ("ssl", "--sinkhorn-iterations", int, 3, AT_LEAST_1, "SwAV: Sinkhorn-Knopp iterations"),
    ("ssl", "--crops-for-assign", "ints", [0, 1], NON_NEGATIVE, "SwAV: the crops whose codes the others predict"),
    ("ssl", "--queue-length", int, 0, NON_NEGATIVE, "SwAV: embeddings queued for the assignment (all ranks; 0: "
                                                    "none; SwAV: 3840 for batches under 256)"),
    ("ssl", "--queue-start-epoch", float, 15.0, NON_NEGATIVE, "SwAV: epoch from which the queue fills"),
    ("ssl", "--freeze-prototypes-epochs", float, 1.0, NON_NEGATIVE, "SwAV: keep the prototypes fixed for the "
                                                                    "first N epochs"),
    ("ssl", "--knn-k", int, 20, AT_LEAST_1, "k-NN validation of --ssl runs: neighbours"),
    ("ssl", "--knn-t", float, 0.07, POSITIVE, "k-NN validation of --ssl runs: temperature of the votes"),
    ("run", "--batch-size", int, 128, AT_LEAST_1, "global batch size (all ranks, one optimizer step)"),
    ("run", "--eval-batch-size", int, None, AT_LEAST_1, "evaluation batch size per rank (default: the training "
                                                        "micro-batch)"),
    ("run", "--output", str, None, None, "output directory (default: runs/<date-time>-<model>); one that holds a "
                                         "run needs --resume or --overwrite"),
    ("run", "--resume", str, None, None, "auto (the output directory's last checkpoint, if any) or a checkpoint "
                                         "path"),
    ("run", "--overwrite", bool, False, None, "start over in an --output that holds a run, deleting that run's "
                                              "files"),
    ("run", "--save-every", int, 0, NON_NEGATIVE, "also checkpoint every N optimizer steps (0: at evaluations "
                                                  "only)"),
    ("run", "--eval-every", int, 1, AT_LEAST_1, "evaluate (and checkpoint) every N epochs"),
    ("run", "--keep-checkpoints", int, 1, AT_LEAST_1, "keep the N best validated checkpoints (above 1: as "
                                                       "checkpoint-step<S>.pt), besides checkpoint-last.pt"),
    ("run", "--eval-every-steps", int, None, AT_LEAST_1, "also evaluate (and checkpoint) every N optimizer steps "
                                                         "(default: off)"),
    ("run", "--log-every", int, 20, AT_LEAST_1, "log every N optimizer steps"),
    ("run", "--device", str, None, None, "cpu | cuda | cuda:N (default: cuda when available)"),
    ("run", "--fsdp", bool, False, None, "shard the weights, gradients and optimizer state over torchrun's ranks "
                                         "(FSDP2); checkpoints become sharded folders (<name>.dcp)"),
    ("run", "--fsdp-hybrid", bool, False, None, "with --fsdp: shard within each node and replicate across nodes "
                                                "(HSDP: less traffic between nodes, each rank holding more)"),
    ("run", "--dist-timeout", float, 1800.0, POSITIVE, "seconds a collective waits for every rank before the run "
                                                       "stops (a rank that died or hangs)"),
    ("run", "--seed", int, 0, NON_NEGATIVE, "seed of every random generator"),
    ("run", "--deterministic", bool, False, None, "deterministic algorithms and per-sample seeded augmentation"),
    ("run", "--ptq-report", "strs", ["fp16_32", "fp16_16", "bf16"], None, "formats evaluated after training "
                                                                          "(PTQ); '' for none"),
    ("run", "--wandb", bool, False, None, "log to Weights & Biases when installed (offline works)"),
    ("run", "--max-time", float, None, POSITIVE, "stop training after this many seconds, then evaluate "
                                                 "(default: no limit)"),
    ("run", "--quiet", bool, False, None, "no progress bars or per-step lines (results, validation and errors "
                                          "still print); bars are drawn only on a terminal anyway"),
]
KEYS = {flag[2:].replace("-", "_"): (group, kind, default, check) for group, flag, kind, default, check, _ in OPTIONS}
DEFAULTS = {k: default for k, (_, _, default, _) in KEYS.items()}
# What a default of None means where the run decides it.
_SHOWN = {"epochs": "300"}

# A model's own training defaults: the layer just above DEFAULTS, under config files and flags, whenever
# the run trains that model, named or not. The default model's make the plain `python -m vitfast.train`
# reach >= 90% on the built-in 32 px data in ~300 steps: no random-resized crop of a 32 px image, no
# smoothing, a short warmup.
MODEL_DEFAULTS = {
    "vit_pico_patch4_32": dict(epochs=4, lr=2e-3, warmup_epochs=0.4, smoothing=0.0, scale=[1.0, 1.0]),
}
# A self-supervised method's own defaults (DINO's for ViT-S/16: main_dino.py and its README), the layer
# over the model's: whenever the run uses that method, under config files and flags.
METHOD_DEFAULTS = {
    "dino": dict(lr=5e-4, lr_base_size=256, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
                 warmup_epochs=10.0, min_lr=1e-6, smoothing=0.0, epochs=100),
    # VISSL's ViT recipes train with AdamW as DINO's (SwAV's LARS settings are a ResNet's)
    "swav": dict(lr=5e-4, lr_base_size=256, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
                 warmup_epochs=10.0, min_lr=1e-6, smoothing=0.0, epochs=100),
}
# Keys only the supervised pipeline reads (a --ssl run crops with --crop-scales and has no labels).
SUPERVISED_ONLY = ("scale", "smoothing", "hflip")
# Keys of earlier releases: a config file or flag naming one is told the new name.
RENAMED = {"warmup": ("warmup_epochs", "warmup_steps")}
# What timm's train.py and PyTorch Lightning's Trainer call our options (dashes or underscores): a flag or
# key of theirs is told ours, where edit distance would point elsewhere (--model-ema to --model).
FOREIGN = {
    "model_ema": "--ema DECAY", "model_ema_decay": "--ema DECAY", "initial_checkpoint": "--init-checkpoint",
    "pretrained": "--init-checkpoint FILE (vitfast downloads nothing)",
    "num_classes": "the dataset's class count (--model-kwargs num_classes=N for weights of another)",
    "input_size": "--img-size", "log_interval": "--log-every", "torchcompile": "--compile",
    "checkpoint_hist": "--keep-checkpoints", "save_top_k": "--keep-checkpoints", "amp_dtype": "--amp bf16|fp16",
    "b": "--batch-size", "j": "--workers", "lr_base": "--lr with --lr-base-size",
    "decay_epochs": "--decay-milestones (fractions of the run)",
    "max_epochs": "--epochs", "max_steps": "--steps", "accumulate_grad_batches": "--grad-accum-steps",
    "precision": "--amp bf16|fp16 (QAT formats: --quant)", "gradient_clip_val": "--clip-grad",
    "check_val_every_n_epoch": "--eval-every", "val_check_interval": "--eval-every-steps",
    "log_every_n_steps": "--log-every", "default_root_dir": "--output",
    "ckpt_path": "--resume FILE", "devices": "--device (torchrun for several)", "accelerator": "--device",
}
ConfigError = UsageError  # the name earlier releases used


def flag_of(key):
    return "--" + key.replace("_", "-")


def origin_of(origins):
    """where(key): the source a refusal names for key's value (resolve's origins; else its flag)."""
    return lambda key: origins.get(key, flag_of(key))


def as_flags(config, keys):
    """The config's values of `keys` as command-line arguments (dicts as k=v,..., lists comma-separated);
    keys without a value (None, empty) left out."""
    out = []
    for key in keys:
        value = config[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if value not in (None, ""):
            out += [flag_of(key), str(value)]
    return out


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


def parse_value(key, text, where=None):
    """A command-line / --set string -> the option's type (lists comma-separated; "none" is null for an
    option whose default is None)."""
    _, kind, default, _ = KEYS[key]
    where = where or flag_of(key)
    text = str(text)
    if kind == "kv":
        return dict(parse_kv(text, where))
    if default is None and text.strip().lower() in ("none", "null"):
        return None
    if kind in ("floats", "ints", "pairs", "strs"):
        return coerce(kind, text, False, where)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads 1e-5 as text: its floats need a dot. YAML 1.2, JSON and OmegaConf (VISSL's
    configs) read it as a number, and so do we, in config files, --model-kwargs and --set alike."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_yaml(text):
    """A YAML document (a string or a file) as Python values, 1e-5 a number."""
    return yaml.load(text, Loader=_Loader)


def parse_kv(text, where="--model-kwargs"):
    """'a=1,b=x' -> [('a', 1), ('b', 'x')], values read as YAML scalars."""
    out = []
    for item in [t for t in str(text).split(",") if t.strip()]:
        if "=" not in item:
            raise UsageError(f"{where}: expected key=value pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out.append((k.strip(), load_yaml(v)))
        except yaml.YAMLError:
            raise UsageError(f"{where}: cannot read the value of {k.strip()!r}: {v!r}") from None
    return out


def packaged_configs():
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("vitfast.configs").iterdir()
                  if p.name.endswith((".yaml", ".json")))


def read_config_file(name):
    """A config file path, or the name of a config shipped in vitfast/configs."""
    if os.path.isfile(name):
        try:
            with open(name) as f:
                data = json.load(f) if name.endswith(".json") else load_yaml(f)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
            raise UsageError(f"-c/--config {name!r} cannot be read as {'JSON' if name.endswith('.json') else 'YAML'}: "
                             f"{one_line(e)}") from None
    else:
        for ext in (".yaml", ".json"):
            res = resources.files("vitfast.configs") / f"{name}{ext}"
            if res.is_file():
                data = load_yaml(res.read_text())
                break
        else:
            raise UsageError(f"-c/--config: {name!r} is neither a file nor a packaged config; packaged: "
                             f"{', '.join(packaged_configs())}{nearest(name, packaged_configs())}")
    if not isinstance(data, dict):
        raise UsageError(f"config {name!r} must hold a mapping of keys to values")
    from .myrtle import is_myrtle_config, translate_myrtle
    from .vissl import is_vissl_config, translate_vissl

    if is_myrtle_config(data):
        data = translate_myrtle(data, os.path.dirname(os.path.abspath(name)), source=f"myrtle config {name!r}")
    elif is_vissl_config(data):
        data = translate_vissl(data, source=f"VISSL config {name!r}")
    return data


def _named_elsewhere(key, spell):
    """' (renamed: ...)' for a key of an earlier release, ' (vitfast's: ...)' for timm's or Lightning's name
    of one of ours, else None. spell: how this source writes one of our keys (its flag, or the key)."""
    key = str(key).replace("-", "_")
    if key in RENAMED:
        return f" (renamed: {' or '.join(spell(k) for k in RENAMED[key])}, one unit each)"
    if key in FOREIGN:
        return f" (vitfast's: {FOREIGN[key]})"
    return None


def unknown_key(key):
    """' (did you mean ...)' for a config key that is not one: named elsewhere, else the nearest."""
    return _named_elsewhere(key, str) or nearest(key, KEYS)


def unknown_flag(flag, flags):
    """unknown_key for a command-line flag."""
    name = flag.split("=")[0]
    return _named_elsewhere(name.lstrip("-"), flag_of) or nearest(name.replace("_", "-"), flags)


def typed(data, source):
    """A config file's {key: value}, each key known and each value of its option's type."""
    out = {}
    for key, value in data.items():
        if key not in KEYS:
            raise UsageError(f"{source}: unknown key {key!r}{unknown_key(key)}")
        _, kind, default, _ = KEYS[key]
        out[key] = coerce(kind, value, default is None, f"{source}, key {key}")
    return out


# Keys that are alternatives: setting one at a later layer (file < flag < --set) clears the other.
_EXCLUSIVE = {"epochs": "steps", "steps": "epochs", "warmup_epochs": "warmup_steps", "warmup_steps": "warmup_epochs"}


def _layer(config, origin, updates, where):
    """Apply updates; origin records where each key the user set came from (where=None: a default)."""
    for key, value in updates.items():
        if key in _EXCLUSIVE and value is not None:
            config[_EXCLUSIVE[key]] = None
            origin.pop(_EXCLUSIVE[key], None)
        config[key] = value
        if where is not None:
            origin[key] = where(key) if callable(where) else where
        check_value(key, value, KEYS[key][3], origin.get(key, flag_of(key)))


def build_parser():
    parser = ArgumentParser(prog="python -m vitfast.train",
                            description="Train a vitfast model. With no arguments: vit_pico_patch4_32 on the "
                                        "built-in dataset for 4 epochs, then a post-training quantization table. "
                                        "A model may bring its own defaults (shown with each flag); config files, "
                                        "flags and --set override them.")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="YAML/JSON config file or packaged config name; sets defaults (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (dots allowed: model_kwargs.depth=6)")
    groups, model = {}, DEFAULTS["model"]
    for group, flag, kind, default, _, help_text in OPTIONS:
        g = groups.setdefault(group, parser.add_argument_group(group))
        if kind is bool:
            g.add_argument(flag, nargs="?", const="true", default=None, metavar="true|false", help=help_text)
            continue
        key = flag[2:].replace("-", "_")
        shown = show(_SHOWN.get(key, default))
        if key in MODEL_DEFAULTS[model]:  # what a plain run uses first
            suffix = f" (default: {show(MODEL_DEFAULTS[model][key])} for {model}, {shown} for other models)"
        else:
            suffix = "" if shown in ("None", "{}") or "default" in help_text else f" (default: {shown})"
        g.add_argument(flag, default=None, metavar=_METAVARS.get(kind, None), help=help_text + suffix)
    return parser


def show(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


_METAVARS = {int: "N", float: "X", "floats": "X,Y", "ints": "N,M", "pairs": "LO,HI,...", "strs": "A,B",
             "kv": "K=V,..."}


def _layers(args, files, model_defaults):
    """(config, origin) from the parsed arguments: DEFAULTS < model_defaults < files < flags < --set."""
    config, origin = dict(DEFAULTS), {}
    if model_defaults:
        _layer(config, origin, model_defaults, None)
    for name, data in files:
        _layer(config, origin, data, lambda key, name=name: f"config {name!r}, key {key}")
    flags = {key: parse_value(key, getattr(args, key)) for key in KEYS if getattr(args, key) is not None}
    for key, other in _EXCLUSIVE.items():
        if key in flags and other in flags:
            raise UsageError(f"give {flag_of(key)} or {flag_of(other)}, not both")
    _layer(config, origin, flags, flag_of)
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        dotted, value = item.split("=", 1)
        key, *sub = dotted.strip().split(".")
        if key not in KEYS:
            raise UsageError(f"--set: unknown key {key!r}{unknown_key(key)}")
        where = f"--set {dotted.strip()}"
        if sub:
            if not isinstance(config.get(key), dict):
                raise UsageError(f"--set: {key!r} has no sub-keys")
            try:
                sub_value = load_yaml(value)
            except yaml.YAMLError:
                raise UsageError(f"{where}: cannot read {value!r}") from None
            _layer(config, origin, {key: {**config[key], ".".join(sub): sub_value}}, where)
        else:
            _layer(config, origin, {key: parse_value(key, value, where)}, where)
    return config, origin


def own_defaults(config):
    """The defaults layer of the model and method a config names: the model's (MODEL_DEFAULTS, a supervised
    recipe) under the method's (METHOD_DEFAULTS): the optimisation recipe is the method's (DINO's learning
    rate is a quarter of vit_pico's supervised one)."""
    return {**MODEL_DEFAULTS.get(config["model"], {}), **METHOD_DEFAULTS.get(config.get("ssl"), {})}


def from_model_defaults(config, origin):
    """{key: value} of the config that the model's or method's own defaults set (no file or flag gave them)."""
    return {k: v for k, v in own_defaults(config).items() if k not in origin and config[k] == v}


def resolve(argv=None, origins=None):
    """argv -> the resolved flat config dict: defaults < the model's defaults (MODEL_DEFAULTS, for the model
    the layers above choose) < config files < flags < --set. origins, a dict if given, receives key -> where
    the user set it ("--lr", "config 'x.yaml', key lr"), for messages."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}{unknown_flag(unknown[0], parser.flags())}")
    files = [(name, typed(read_config_file(name), f"config {name!r}")) for name in args.config]
    config, origin = _layers(args, files, None)
    own = own_defaults(config)
    if own:
        config, origin = _layers(args, files, own)
    config["model_kwargs"] = typed_model_kwargs(config["model_kwargs"], origin.get("model_kwargs", "--model-kwargs"))
    if origins is not None:
        origins.update(origin)
    return check_config(config, origin, flag_of)


# What a resumed run may do differently from the run that wrote its checkpoint: where and how it runs and
# reports, not what it trains (every other key is taken from the checkpoint's config).
RUN_CONTROL = ("output", "resume", "overwrite", "device", "workers", "eval_batch_size", "log_every", "save_every",
               "eval_every", "eval_every_steps", "keep_checkpoints", "extend_epochs", "extend_steps", "max_time",
               "ptq_report", "compile", "grad_checkpointing", "download", "strict_data", "fsdp", "fsdp_hybrid",
               "dist_timeout",
               "wandb", "quiet")


def for_resume(saved, config, origins, path):
    """The configuration a resumed run goes on with: the checkpoint's own (`saved`), with the run-control
    keys the user gave now. A key given now that would change what the run trains (model, data,
    schedule, optimizer, ...) is refused, naming each: the run's config.yaml says what it was."""
    saved, given = upgraded(saved), recorded(config)
    changed = [k for k in origins if k not in RUN_CONTROL and k in saved and saved[k] != given[k]]
    if changed:
        diff = "; ".join(f"{origins[k]} {config[k]!r} (the run has {saved[k]!r})" for k in changed)
        raise UsageError(f"--resume {path}: {diff} would change what the run trains. Resume without "
                         f"{'them' if len(changed) > 1 else 'it'} (the run goes on with its own config.yaml), or "
                         f"start a new run in another --output, from these weights with --init-checkpoint {path}")
    resumed = dict(config)
    resumed.update({k: v for k, v in saved.items() if k in KEYS and k not in origins})
    for key in ("output", "resume", "overwrite", "device"):  # this invocation's, given or not
        resumed[key] = config[key]
    return resumed


def recorded(config):
    """The config as a run records it (config.yaml, checkpoints, model.safetensors): every path absolute, so
    that eval, --teacher and --resume read the same files from any working directory."""
    out = dict(config)
    kind, sep, root = str(out["data"]).partition(":")
    if sep and root:
        out["data"] = f"{kind}:{os.path.abspath(os.path.expanduser(root))}"
    for key in ("init_checkpoint", "teacher_checkpoint", "output"):
        if out.get(key):
            out[key] = os.path.abspath(os.path.expanduser(out[key]))
    if out.get("teacher") and os.path.isfile(out["teacher"]):  # a file, not a model name
        out["teacher"] = os.path.abspath(out["teacher"])
    return out


def upgraded(saved):
    """A run's config as written by an earlier release, in today's keys: its warmup ("warmup": epochs under
    epochs, steps under steps) in the key of that unit."""
    saved = dict(saved)
    if "warmup" in saved and "warmup_epochs" not in saved:
        warmup = saved.pop("warmup")
        saved.update(warmup_steps=int(warmup), warmup_epochs=None) if saved.get("steps") else \
            saved.update(warmup_epochs=warmup, warmup_steps=None)
    return saved


def typed_model_kwargs(kwargs, where):
    """create_model overrides: identifiers as keys (the model itself says which it takes)."""
    for k in kwargs:
        if not str(k).isidentifier():
            raise UsageError(f"{where}: {k!r} is not an argument name")
    return kwargs


def creation_kwargs(config):
    """create_model's keyword arguments for the model a run's config names (without num_classes): its
    --model-kwargs, --img-size and --drop-path."""
    kwargs = dict(config["model_kwargs"])
    if config.get("img_size"):
        kwargs["img_size"] = config["img_size"]
    if config.get("drop_path") is not None:
        kwargs["drop_path_rate"] = config["drop_path"]
    return kwargs


def dump(config, path):
    from ..files import atomic_write

    def write(tmp):
        with open(tmp, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    atomic_write(path, write)
