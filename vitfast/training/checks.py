"""Checks of the training configuration where each value enters (a flag, a -c file, --set, a myrtle
JSON): its type and range, then what only the whole configuration can tell — values that must agree,
names that must exist, options that would have no effect in the given combination. Every failure is a
UsageError naming where the value came from and what was expected."""
import os

from ..cli import UsageError, blame, nearest, parse_device


class Range:
    """Bounds of a numeric option (of each element, for a list option)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def __contains__(self, v):
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def __str__(self):
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
PROBABILITY, FRACTION, OPEN_UNIT = Range(0, 1), Range(0, 1, hi_open=True), Range(0, 1, lo_open=True)

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               "floats": "a list of numbers", "ints": "a list of integers", "strs": "a list of names",
               "pairs": "pairs of numbers ([[lo, hi], ...], or lo,hi,lo,hi,... on the command line)",
               "kv": "a mapping of key: value"}


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def coerce(kind, value, nullable, where):
    """A value read from a file (YAML/JSON types) or already parsed from text, checked against the
    option's kind; lists may also come as one comma-separated string, as on the command line."""
    if value is None:
        if nullable:
            return None
        raise UsageError(f"{where}: expected {_KIND_NAMES[kind]}, got null")
    bad = UsageError(f"{where}: expected {_KIND_NAMES[kind]}, got {value!r}"
                     + (" (a string)" if isinstance(value, str) and kind in (int, float, bool) else ""))
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
        return value
    if kind is float:
        if not _is_number(value):
            raise bad
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "floats":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        out = []
        for v in value:
            if isinstance(v, bool) or not (_is_number(v) or isinstance(v, str)):
                raise bad
            try:
                out.append(float(v))
            except ValueError:
                raise bad from None
        return out
    if kind == "ints":
        return [coerce(int, v, False, where) for v in coerce("floats", value, False, where)]
    if kind == "pairs":  # VISSL's crop_scales: [[0.14, 1], [0.05, 0.14]]
        if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in value):
            value = [x for v in value for x in v] if all(len(v) == 2 for v in value) else None
        flat = coerce("floats", value, False, where) if value is not None else []
        if not flat or len(flat) % 2:
            raise bad
        return [flat[i:i + 2] for i in range(0, len(flat), 2)]
    if kind == "strs":
        if isinstance(value, str):
            from .config import split_top_level

            return split_top_level(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
        return list(value)
    if kind == "kv":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    raise AssertionError(kind)


def check_value(key, value, check, where):
    """Range or choices of one (already typed) value."""
    if value is None or check is None:
        return
    if isinstance(check, tuple):
        if value not in check:
            raise UsageError(f"{where} must be one of {', '.join(check)}, got {value!r}{nearest(value, check)}")
        return
    for v in value if isinstance(value, list) else [value]:
        if v not in check:
            raise UsageError(f"{where} must be {check}, got {value!r}")


# Options whose only effect is through another: (key, what it needs, test on the config).
_NEEDS = [
    ("quant_grad", "--quant (gradients are rounded only in quantization-aware training)", lambda c: c["quant"]),
    ("teacher_checkpoint", "--teacher NAME", lambda c: c["teacher"]),
    ("teacher_random_init", "--teacher NAME", lambda c: c["teacher"]),
    ("teacher_weights", "--teacher", lambda c: c["teacher"]),
    ("init_weights", "--init-checkpoint", lambda c: c["init_checkpoint"]),
    ("fsdp_hybrid", "--fsdp", lambda c: c["fsdp"]),
    ("extend_epochs", "--resume (it lengthens a run that exists)", lambda c: c["resume"]),
    ("extend_steps", "--resume (it lengthens a run that exists)", lambda c: c["resume"]),
    *((key, "--ssl dino or swav", lambda c: c["ssl"]) for key in (
        "num_crops", "size_crops", "crop_scales", "crop_color_jitter", "crop_grayscale", "total_num_crops", "knn_k",
        "knn_t")),
    *((key, "--ssl dino", lambda c: c["ssl"] == "dino") for key in (
        "head_hidden_dim", "head_bottleneck_dim", "head_out_dim", "norm_last_layer", "freeze_last_layer_epochs",
        "student_temp", "teacher_temp", "warmup_teacher_temp", "warmup_teacher_temp_epochs", "center_momentum",
        "teacher_momentum")),
    *((key, "--ssl swav", lambda c: c["ssl"] == "swav") for key in (
        "head_dims", "head_use_bn", "num_clusters", "swav_temp", "sinkhorn_epsilon", "sinkhorn_iterations",
        "crops_for_assign", "queue_length", "queue_start_epoch", "freeze_prototypes_epochs")),
    ("distill_type", "--teacher", lambda c: c["teacher"]),
    ("distill_alpha", "--teacher", lambda c: c["teacher"]),
    ("distill_tau", "--teacher", lambda c: c["teacher"]),
    ("momentum", "--opt sgd", lambda c: c["opt"] == "sgd"),
    ("betas", "--opt adamw or lamb", lambda c: c["opt"] in ("adamw", "lamb")),
    ("decay_milestones", "--sched step", lambda c: c["sched"] == "step"),
    ("decay_rate", "--sched step", lambda c: c["sched"] == "step"),
    ("min_lr", "--sched cosine or linear", lambda c: c["sched"] in ("cosine", "linear")),
    ("download", "a CIFAR dataset (--data cifar10:DIR or cifar100:DIR)",
     lambda c: str(c["data"]).lower().startswith(("cifar10:", "cifar100:"))),
    ("strict_data", "an image-file dataset (--data folder:DIR or paths:DIR)",
     lambda c: str(c["data"]).lower().startswith(("folder:", "paths:"))),
]


def check_config(c, origin, flag_of):
    """The whole configuration: what one value alone cannot tell. origin: key -> where it was set
    (only keys the user set); flag_of(key) -> its command-line flag."""
    def where(key):
        return origin.get(key, flag_of(key))

    for key, needs, ok in _NEEDS:
        # asked for on the command line (a recipe file may carry settings for its variants) and read by nothing
        if origin.get(key, "").startswith("--") and c[key] not in (None, False) and not ok(c):
            raise UsageError(f"{where(key)} has no effect without {needs}; remove it or add what it needs")
    for a, b in (("epochs", "steps"), ("warmup_epochs", "warmup_steps"), ("extend_epochs", "extend_steps")):
        if c[a] is not None and c[b] is not None:
            raise UsageError(f"give {flag_of(a)} or {flag_of(b)}, not both")
    if c["batch_size"] % c["grad_accum_steps"]:
        raise UsageError(f"batch_size ({c['batch_size']}) must be divisible by grad_accum_steps "
                         f"({c['grad_accum_steps']})")
    if len(c["scale"]) != 2 or c["scale"][0] > c["scale"][1]:
        raise UsageError(f"{where('scale')} must be two numbers lo,hi with 0 < lo <= hi <= 1, got {c['scale']}")
    if len(c["betas"]) != 2:
        raise UsageError(f"{where('betas')} must be two numbers beta1,beta2 in [0, 1), got {c['betas']}")
    if c["decay_milestones"] != sorted(c["decay_milestones"]):
        raise UsageError(f"{where('decay_milestones')} must be increasing fractions of training, "
                         f"got {c['decay_milestones']}")
    for key in ("mean", "std"):
        if c[key] is not None and len(c[key]) != 3:
            raise UsageError(f"{where(key)} must be three numbers (one per RGB channel), got {c[key]}")
    if c["img_size"] and "img_size" in c["model_kwargs"] and c["model_kwargs"]["img_size"] != c["img_size"]:
        raise UsageError(f"{where('img_size')} {c['img_size']} contradicts {where('model_kwargs')} "
                         f"img_size={c['model_kwargs']['img_size']}; give one")
    if c["data_on_device"] and c["color_jitter"]:
        raise UsageError(f"{where('data_on_device')} has no colour jitter; {where('color_jitter')} needs the host "
                         "pipeline: drop one or the other (RandAugment, --aa rand-..., runs on the device)")
    if c["ssl"]:
        _check_ssl(c, where)
    if c["fsdp"]:
        _check_fsdp(c, where)
    if c["overwrite"] and c["resume"]:
        raise UsageError("--overwrite starts the run over and --resume continues it: give one")

    from ..models import get_model_config

    with blame(where("model")):
        get_model_config(c["model"])
    _check_data_spec(c["data"], where("data"))
    if c["aa"]:
        from ..data import parse_auto_augment

        with blame(where("aa")):
            parse_auto_augment(c["aa"])
            if c["data_on_device"]:
                from ..data.device_randaug import DeviceRandAugment

                DeviceRandAugment.from_spec(c["aa"])
    from ..quant import parse_format, parse_recipe

    if c["quant"]:
        with blame(where("quant")):
            recipe = parse_recipe(c["quant"], where("quant"))
        if c["quant_grad"] and recipe.is_scaled:
            raise UsageError(f"{where('quant_grad')}: the scaled recipe {recipe.name} rounds no gradients; "
                             "use a plain recipe (FP16_16, BF16, float(e=,m=)...) with --quant-grad")
    if c["quant_grad"]:
        with blame(where("quant_grad")):
            parse_format(c["quant_grad"], where("quant_grad"))
    for fmt in c["ptq_report"]:
        with blame(where("ptq_report")):
            parse_recipe(fmt, where("ptq_report"))
    parse_device(c["device"], where("device"))
    from .state import settled

    if c["resume"] not in (None, "auto") and not os.path.exists(settled(c["resume"])):
        raise UsageError(f"{where('resume')}: no checkpoint at {c['resume']!r} (use 'auto' or a file path)")
    return c


def _check_data_spec(spec, where):
    """The spec's syntax here; whether the dataset is there is checked when it is opened."""
    kinds = ("builtin", "cifar10", "cifar100", "folder", "paths")
    kind, sep, root = str(spec).partition(":")
    if kind.lower() not in kinds:
        raise UsageError(f"{where} must be builtin, cifar10:DIR, cifar100:DIR, folder:DIR or paths:DIR, got "
                         f"{spec!r}{nearest(kind, kinds)}")
    if kind.lower() != "builtin" and not root.strip():
        raise UsageError(f"{where} {spec!r}: {kind} needs a directory, as in {kind}:DIR")


def _check_fsdp(c, where):
    """What --fsdp does not run with, refused in one line rather than run unsharded or wrong."""
    if c["amp"] == "fp16":
        raise UsageError(f"{where('fsdp')} with {where('amp')} fp16: sharded training has no fp16 loss scaler here; "
                         "use --amp bf16 (fp32's range, no scaler needed)")


# Options that act on labels: a self-supervised run has none to act on.
_LABELS_ONLY = {"mixup": "mixup", "cutmix": "cutmix", "smoothing": "label smoothing", "teacher": "distillation",
                "repeated_aug": "repeated augmentation", "aa": "RandAugment (multi-crop has its own augmentation)",
                "color_jitter": "--color-jitter (multi-crop jitters every crop)", "reprob": "random erasing",
                "ema": "--ema (DINO's teacher is the student's EMA already; SwAV keeps none)"}


def _check_ssl(c, where):
    """--ssl: no option that needs labels or the supervised pipeline, and crop groups that agree."""
    for key, what in _LABELS_ONLY.items():
        if c[key]:  # all off by default under --ssl (METHOD_DEFAULTS turns smoothing off)
            raise UsageError(f"{where(key)}: {what} is for supervised training; --ssl {c['ssl']} trains without "
                             "labels: remove it")
    groups = [c[k] for k in ("num_crops", "size_crops", "crop_scales") if c[k] is not None]
    if len({len(g) for g in groups}) > 1:
        raise UsageError(f"{where('num_crops')} {c['num_crops']}, {where('size_crops')} {c['size_crops']} and "
                         f"{where('crop_scales')} {c['crop_scales']} must have one entry per crop group")
    jitter = c["crop_color_jitter"]
    if jitter is not None and (len(jitter) != 4 or jitter[3] > 0.5):
        raise UsageError(f"{where('crop_color_jitter')} {','.join(f'{v:g}' for v in jitter)}: four strengths, "
                         "brightness,contrast,saturation,hue, the hue at most 0.5")
    if c["total_num_crops"] is not None:
        from .methods import SSL_METHODS  # the methods import the training modules that import this one

        num_crops = list(c["num_crops"] or SSL_METHODS[c["ssl"]].default_crops)
        if sum(num_crops) != c["total_num_crops"]:
            raise UsageError(f"{where('total_num_crops')} {c['total_num_crops']} is not the sum of "
                             f"{where('num_crops')} {num_crops}")
