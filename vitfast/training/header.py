"""The lines a run prints before its first step: what it trains, on what, for how long and where to; the
defaults a model or method brought; the warmup; a CPU that only emulates --amp bf16."""
from ..cli import plural
from . import config as config_lib

__all__ = ["print_header", "cpu_has_bf16"]


def print_header(log, cfg, origin, model, data, schedule, dist, parallel, out):
    device = dist.device
    length = "" if cfg["steps"] or cfg["epochs"] else ", the default length: no --epochs or --steps was given"
    log.print(f"{describe_model(cfg, model, data.num_classes)}, "
              f"{len(data.train_set)} training / {len(data.val_set)} validation images, {data.num_classes} classes, "
              f"{plural(schedule.total_steps, 'step')} of {cfg['batch_size']} ({plural(schedule.epochs, 'epoch')}"
              f"{length}) on {dist.world_size} x {device}{parallel.describe()}; output {out}")
    if device.type == "cpu" and cfg["amp"] == "bf16" and cpu_has_bf16() is False:
        log.print("note: this CPU has no bf16 arithmetic (AVX512-BF16 / AMX): --amp bf16 is emulated here and runs "
                  "several times slower than --amp none")
    own = {k: v for k, v in config_lib.from_model_defaults(cfg, origin).items()
           if not (cfg["ssl"] and k in config_lib.SUPERVISED_ONLY)}  # (not what a --ssl run reads)
    method, data = config_lib.method_defaults(cfg["ssl"]), config_lib.data_defaults(cfg, origin)
    for owner, keys in ((cfg["model"], [k for k in own if k not in method and k not in data]),
                        (f"--ssl {cfg['ssl']}", [k for k in own if k in method and k not in data]),
                        ("the built-in data", [k for k in own if k in data])):
        if keys:  # each default named with whose it is: DINO's warmup is not the model's
            settings = ", ".join(f"{config_lib.flag_of(k)} {config_lib.show(own[k])}" for k in keys)
            log.print(f"{owner}'s own defaults: {settings} (a flag or config key overrides each)")
    if cfg["ssl"] and not cfg["ptq_report"] and "ptq_report" not in origin:
        log.print(f"post-training table: off, --ssl {cfg['ssl']}'s default (each format would extract the k-NN "
                  "memory bank's features again); --ptq-report fp16_32,bf16 asks for it")
    if schedule.warmup_steps:
        log.print(f"warmup: {plural(schedule.warmup_steps, 'step')}{schedule.warmup_note}, "
                  f"from lr {cfg['warmup_lr']:g}")
    elif schedule.warmup_note.startswith("none"):
        log.print(f"warmup: {schedule.warmup_note}")


def describe_model(cfg, model, num_classes):
    """The model as built: its name, the arguments that reshape it (a VISSL trunk's size is in them, not in
    the name), and its parameters with the head it has here (vitfast.list counts timm's 1000 classes)."""
    kwargs = ", ".join(f"{k}={v}" for k, v in cfg["model_kwargs"].items())
    head = "the backbone; the method's heads are extra" if cfg["ssl"] else \
        f"a classifier for {num_classes} classes included; vitfast.list counts one for 1000"
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return f"{cfg['model']}{f' ({kwargs})' if kwargs else ''}: {millions:.2f}M parameters ({head})"


def cpu_has_bf16():
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16); None: cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
