"""The lines a run prints before its first step: what it trains, on what, for how long and where to; the
defaults a model or method brought; the warmup; a CPU that only emulates --amp bf16."""
from ..cli import plural
from . import config as config_lib

__all__ = ["print_header", "cpu_has_bf16"]


def print_header(log, cfg, origin, model, data, schedule, dist, parallel, out):
    device = dist.device
    length = "" if cfg["steps"] or cfg["epochs"] else ", the default length: no --epochs or --steps was given"
    log.print(f"{cfg['model']}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"{len(data.train_set)} training / {len(data.val_set)} validation images, {data.num_classes} classes, "
              f"{plural(schedule.total_steps, 'step')} of {cfg['batch_size']} ({plural(schedule.epochs, 'epoch')}"
              f"{length}) on {dist.world_size} x {device}{parallel.describe()}; output {out}")
    if device.type == "cpu" and cfg["amp"] == "bf16" and cpu_has_bf16() is False:
        log.print("note: this CPU has no bf16 arithmetic (AVX512-BF16 / AMX): --amp bf16 is emulated here and runs "
                  "several times slower than --amp none")
    own = {k: v for k, v in config_lib.from_model_defaults(cfg, origin).items()
           if not (cfg["ssl"] and k in config_lib.SUPERVISED_ONLY)}  # (not what a --ssl run reads)
    if own:
        settings = ", ".join(f"{config_lib.flag_of(k)} {config_lib.show(v)}" for k, v in own.items())
        owner = cfg["model"] + (f" and --ssl {cfg['ssl']}" if cfg["ssl"] else "")
        log.print(f"{owner}'s own defaults: {settings} (a flag or config key overrides each)")
    if schedule.warmup_steps:
        log.print(f"warmup: {plural(schedule.warmup_steps, 'step')}{schedule.warmup_note}, "
                  f"from lr {cfg['warmup_lr']:g}")
    elif schedule.warmup_note.startswith("none"):
        log.print(f"warmup: {schedule.warmup_note}")


def cpu_has_bf16():
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16); None: cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
