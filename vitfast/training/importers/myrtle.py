"""myrtle-vision's JSON training configs (train_configs/*.json), read as vitfast configs, so
`python -m vitfast.train -c train_configs/vit_tiny.json` works. Keys with no vitfast meaning are never
silently dropped: one that would make the run another experiment (SAM, lr noise, a cooldown, pretrained
weights we cannot find) refuses the file in one line; one that only changes how it runs is warned."""
import json
import os
import warnings

from ...cli import UsageError
from . import NEEDS, refuse

_SIZES = {192: "tiny", 384: "small", 768: "base"}
# train_config key -> vitfast key
_TRAIN = {"output_directory": "output", "epochs": "epochs", "seed": "seed", "optimizer": "opt",
          "clip_grad": "clip_grad", "momentum": "momentum", "weight_decay": "weight_decay", "scheduler": "sched",
          "lr": "lr", "warmup_lr": "warmup_lr", "min_lr": "min_lr", "warmup_epochs": "warmup_epochs",
          "decay_rate": "decay_rate", "iters_per_checkpoint": "save_every"}
# what would change the experiment (vitfast has no SAM, lr noise or cooldown; the backbone's weights: give
# --init-checkpoint), and what only changes how it runs
_NOISE = "vitfast's schedules have no noise"
_REFUSED = {"lr_noise": _NOISE, "lr_noise_pct": _NOISE, "lr_noise_std": _NOISE, "sam": "vitfast has no SAM",
            "sam_rho": "vitfast has no SAM", "cooldown_epochs": "vitfast's schedules end at --epochs, with no cooldown",
            "pretrained_backbone": "give the weights' file as --init-checkpoint"}
_HOW_IT_RUNS = {"distributed", "iters_per_val", "drop_last_batch"}


def is_myrtle_config(data):
    return "train_config" in data and "vit_config" in data


def translate_myrtle(data, config_dir=".", source="myrtle config"):
    """myrtle-vision's {train_config, vit_config[, distiller_config, data_config(_path)]} -> vitfast keys;
    a missing or mistyped field is a UsageError naming it."""
    try:
        return _translate(data, config_dir)
    except KeyError as e:
        raise UsageError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, AttributeError, ZeroDivisionError) as e:
        raise UsageError(f"{source}: a field has the wrong type ({e})") from None


def _translate(data, config_dir):
    t, v = data["train_config"], data["vit_config"]
    given = sorted(k for k in t if t[k] not in (None, False, "", 0))
    refused = [f"{k} {t[k]} ({_REFUSED[k]})" for k in given if k in _REFUSED]
    if t.get("opt_eps") not in (None, 1e-8):
        refused.append(f"opt_eps {t['opt_eps']} (vitfast's optimizers use 1e-8)")
    if t.get("scheduler") == "step" and t.get("decay_epochs"):
        refused.append(f"decay_epochs {t['decay_epochs']} (a step schedule: give --decay-milestones, fractions of "
                       "the run)")
    refuse("myrtle-vision config", refused)
    out, ignored = {}, [k for k in given if k in _HOW_IT_RUNS]
    for key, ours in _TRAIN.items():
        if t.get(key) is not None:
            out[ours] = t[key]
    if out.get("opt", "adamw") != "sgd":
        out.pop("momentum", None)  # myrtle's files carry it for every optimizer; only SGD reads it
    if t.get("opt_betas"):
        out["betas"] = list(t["opt_betas"])
    if t.get("checkpoint_path"):
        out["resume"] = t["checkpoint_path"]
    out["batch_size"] = t["global_batch_size"]
    out["grad_accum_steps"] = max(1, t["global_batch_size"] // t["local_batch_size"])

    distilled = "distiller_config" in data
    dim = v["embed_dim"]
    family = "deit" if distilled else "vit"
    out["model"] = f"{family}_{_SIZES.get(dim, 'base')}{'_distilled' if distilled else ''}_patch16_224"
    out["model_kwargs"] = {"img_size": v["image_size"], "patch_size": v["patch_size"], "embed_dim": dim,
                           "depth": v["depth"], "num_heads": v["heads"], "mlp_ratio": v["mlp_dim"] / dim,
                           "drop_rate": v.get("dropout", 0.0), "proj_drop_rate": v.get("dropout", 0.0),
                           "pos_drop_rate": v.get("emb_dropout", 0.0)}
    if v.get("q_format", "FP32").upper() not in ("FP32", "PYTORCHINT8"):
        out["quant"] = v["q_format"]
    elif v.get("q_format", "").upper() == "PYTORCHINT8":
        # myrtle quantizes to int8 after fp32 training (torch.quantization): our scaled INT8 PTQ report
        out["ptq_report"] = ["int8"]
    if distilled:
        d = data["distiller_config"]
        out.update(teacher="resnet50", teacher_checkpoint=d.get("teacher_weights_path"), distill_type="soft",
                   distill_tau=d.get("temperature", 3.0), distill_alpha=d.get("alpha", 0.5))

    data_cfg = data.get("data_config")
    if data_cfg is None and data.get("data_config_path"):
        path = data["data_config_path"]
        path = path if os.path.isabs(path) or os.path.exists(path) else os.path.join(config_dir, "..", path)
        if os.path.isfile(path):
            with open(path) as f:
                data_cfg = json.load(f)
        else:
            out[NEEDS] = {"data": f"its data_config_path {data['data_config_path']} is not found"}
    if data_cfg:
        out["data"] = f"paths:{data_cfg['dataset_path']}"
        if data_cfg.get("mixup"):
            out["mixup"] = data_cfg.get("mixup_alpha", 0.8)
        norm = data_cfg.get("transform_ops_train", {}).get("Normalize")
        if norm:
            out["mean"], out["std"] = list(norm["Mean"]), list(norm["Std"])
    if ignored:
        warnings.warn(f"myrtle-vision config: {', '.join(ignored)}: how myrtle-vision runs, which vitfast's torchrun, "
                      "--eval-every and batches decide; not read", stacklevel=2)
    return out
