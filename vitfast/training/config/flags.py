"""How options are named to the user: their flags, where a value came from, the names other tools and
earlier releases give them, and a config's values written back as command-line arguments."""
from ...cli import nearest

# Keys of earlier releases: a config file or flag naming one is told the new name.
RENAMED = {"warmup": ("warmup_epochs", "warmup_steps")}
# What other tools call our options (dashes or underscores): a flag or key of theirs is told ours, where
# edit distance would point elsewhere (--model-ema to --model, DINO's --data_path to --drop-path).
TIMM = {
    "model_ema": "--ema DECAY", "model_ema_decay": "--ema DECAY", "initial_checkpoint": "--init-checkpoint",
    "pretrained": "--init-checkpoint FILE (vitfast downloads nothing)",
    "num_classes": "the dataset's class count (--model-kwargs num_classes=N for weights of another)",
    "input_size": "--img-size", "log_interval": "--log-every", "torchcompile": "--compile",
    "checkpoint_hist": "--keep-checkpoints", "amp_dtype": "--amp bf16|fp16",
    "b": "--batch-size", "j": "--workers", "lr_base": "--lr with --lr-base-size",
    "decay_epochs": "--decay-milestones (fractions of the run)",
}
LIGHTNING = {
    "max_epochs": "--epochs", "max_steps": "--steps", "accumulate_grad_batches": "--grad-accum-steps",
    "precision": "--amp bf16|fp16 (QAT formats: --quant)", "gradient_clip_val": "--clip-grad",
    "check_val_every_n_epoch": "--eval-every", "val_check_interval": "--eval-every-steps",
    "log_every_n_steps": "--log-every", "default_root_dir": "--output", "save_top_k": "--keep-checkpoints",
    "ckpt_path": "--resume FILE", "devices": "--device (torchrun for several)", "accelerator": "--device",
}
NO_LARS = "--opt adamw | sgd | lamb; vitfast has no LARS, and LAMB is the layer-wise adaptive one"
LAUNCHER = "none; vitfast reads torchrun's environment: torchrun --nproc-per-node N -m vitfast.train ..."
DINO = {  # facebookresearch/dino's main_dino.py
    "arch": "--model with timm's name; DINO's --arch vit_small --patch_size 16 is --model vit_small_patch16_224",
    "patch_size": "the patch size in the --model name, as vit_small_patch8_224, or --model-kwargs patch_size=N",
    "use_fp16": "--amp fp16, or --amp bf16, which needs no loss scaler",
    "momentum_teacher": "--teacher-momentum", "freeze_last_layer": "--freeze-last-layer-epochs",
    "local_crops_number": "--num-crops 2,N: global crops, then local",
    "global_crops_scale": "--crop-scales LO,HI,LO,HI: global, then local",
    "local_crops_scale": "--crop-scales LO,HI,LO,HI: global, then local",
    "data_path": "--data folder:DIR, where DIR holds train/<class>/ and val/<class>/; DINO's --data_path is the "
                 "train folder itself",
    "batch_size_per_gpu": "--batch-size, the global batch of all ranks: DINO's --batch_size_per_gpu 64 on 8 GPUs is "
                          "--batch-size 512",
    "optimizer": NO_LARS, "output_dir": "--output", "saveckp_freq": "--save-every N, in optimizer steps",
    "dist_url": LAUNCHER, "local_rank": LAUNCHER,
}
SOLO_LEARN = {  # vturrisi/solo-learn's pretraining arguments
    "method": "--ssl dino | swav | mocov3", "backbone": "--model with timm's name",
    "num_large_crops": "--num-crops N,M: large crops, then small",
    "num_small_crops": "--num-crops N,M: large crops, then small", "crop_size": "--size-crops N,M",
    "min_scale": "--crop-scales LO,HI,LO,HI", "max_scale": "--crop-scales LO,HI,LO,HI",
    "proj_hidden_dim": "--head-hidden-dim", "proj_output_dim": "--head-bottleneck-dim",
    "num_prototypes": "--head-out-dim for DINO, --num-clusters for SwAV",
    "base_tau_momentum": "--teacher-momentum, raised to 1 on a cosine",
    "final_tau_momentum": "none; --teacher-momentum is always raised to 1 on a cosine",
    "temperature": "--swav-temp for SwAV, --student-temp for DINO", "sk_iters": "--sinkhorn-iterations",
    "lars": NO_LARS, "eta_lars": NO_LARS, "exclude_bias_n_norm": NO_LARS,
}
FOREIGN = {**TIMM, **LIGHTNING, **DINO, **SOLO_LEARN}


def flag_of(key):
    return "--" + key.replace("_", "-")


def origin_of(origins):
    """where(key): the source a refusal names for key's value (resolve's origins; else its flag)."""
    return lambda key: origins.get(key, flag_of(key))


def show(value):
    """A value as it is given on the command line: lists (of pairs too) comma-separated, an empty one as '',
    no value as none (--clip-grad none)."""
    if isinstance(value, (list, tuple)):
        return ",".join(show(v) for v in value) or "''"
    return "none" if value is None else str(value)


def as_flags(config, keys):
    """The config's values of `keys` as command-line arguments (dicts as k=v,..., lists comma-separated);
    keys without a value (None, empty) left out."""
    out = []
    for key in keys:
        value = config[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = show(value) if value else ""
        if value not in (None, ""):
            out += [flag_of(key), str(value)]
    return out


def _named_elsewhere(key, spell):
    """' (renamed: ...)' for a key of an earlier release, ' (vitfast's: ...)' for timm's or Lightning's name
    of one of ours, else None. spell: how this source writes one of our keys (its flag, or the key)."""
    key = str(key).replace("-", "_")
    if key in RENAMED:
        return f" (renamed: {' or '.join(spell(k) for k in RENAMED[key])}, one unit each)"
    if key in FOREIGN:
        return f" (vitfast's: {FOREIGN[key]})"
    return None


def unknown_key(key, keys):
    """' (did you mean ...)' for a config key that is not one of `keys`: named elsewhere, else the nearest."""
    return _named_elsewhere(key, str) or nearest(key, keys)


def unknown_flag(flag, flags):
    """unknown_key for a command-line flag."""
    name = flag.split("=")[0]
    return _named_elsewhere(name.lstrip("-"), flag_of) or nearest(name.replace("_", "-"), flags)
