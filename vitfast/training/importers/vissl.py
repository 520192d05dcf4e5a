"""VISSL's YAML configs read as vitfast configs where our options cover them, so that
`python -m vitfast.train -c vissl_config.yaml` trains what it describes: the multi-crop transform and
normalisation (DATA.TRAIN.TRANSFORMS), the data folder and global batch, the ViT trunk
(MODEL.TRUNK.VISION_TRANSFORMERS), the SwAV or DINO head (MODEL.HEAD.PARAMS) and loss (LOSS), or a
fine-tuning config's classifier and initial weights (MODEL.WEIGHTS_INIT.PARAMS_FILE), and the optimizer,
its epochs and schedules (OPTIMIZER). VISSL's command-line overrides (`config.OPTIMIZER.num_epochs=100`)
change the file's keys first, as VISSL applies them.

What those sections ask that we do not do is sorted in two, never silently dropped: what would make the
run another experiment (a loss, head or transform we lack, LARC, a schedule we lack) refuses the file in
one line naming what we have and the override that changes it; a trunk or data source we cannot read is
refused unless --model or --data replaces it (NEEDS); what only changes how it runs (launching, machine)
is said in a warning. The rest of a VISSL file (hooks, checkpointing) is VISSL's own and not read. Keys a
file leaves out take vitfast's defaults, not VISSL's."""
import os
import re
import warnings

import yaml

from ...cli import UsageError
from ..config.kinds import load_yaml
from . import NEEDS, refuse

__all__ = ["OVERRIDE", "VISSL", "is_vissl_config", "translate_vissl"]

VISSL = "__vissl__"  # marks a VISSL file's keys: VISSL's overrides applied to it
OVERRIDE = re.compile(r"^\+?config(\.[A-Za-z_]\w*)+=")  # VISSL's (Hydra's) config.KEY.SUB=value

_SIZES = {192: "tiny", 384: "small", 768: "base", 1024: "large"}
_SUPERVISED = {"cross_entropy_multiple_output_single_target"}  # a fine-tuning config's loss: vitfast's own
# a self-supervised loss's VISSL keys -> vitfast's options
_LOSS_KEYS = {"swav_loss": (("temperature", "swav_temp"), ("epsilon", "sinkhorn_epsilon"),
                            ("num_iters", "sinkhorn_iterations"), ("crops_for_assign", "crops_for_assign")),
              "dino_loss": (("momentum", "teacher_momentum"), ("teacher_temp_min", "warmup_teacher_temp"),
                            ("teacher_temp_max", "teacher_temp"), ("ema_center", "center_momentum"))}
# transforms whose effect our multi-crop pipeline has (at its settings: DINO's / SwAV's)
_COVERED = {"RandomHorizontalFlip", "ToTensor", "ImgPilGaussianBlur",
            "ImgPilRandomSolarize", "RandomResizedCrop"}


def is_vissl_config(data):
    root = data.get("config", data)
    return isinstance(root, dict) and isinstance(root.get("DATA"), dict) and isinstance(root.get("MODEL"), dict)


def translate_vissl(data, source="VISSL config", overrides=()):
    """The file's keys in ours (NEEDS among them where the file asks what a flag must replace); `overrides`:
    VISSL's config.KEY=value arguments, applied to the file first."""
    root = data.get("config", data)
    said = [_override(root, text, source) for text in overrides]
    device = [text for text in overrides if text.lstrip("+").startswith("config.MACHINE.DEVICE=")]
    try:
        out, refused, needs = _translate(root)
    except KeyError as e:
        raise UsageError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError, IndexError) as e:
        raise UsageError(f"{source}: a field has the wrong type ({e})") from None
    refuse(source, refused)
    for text in filter(None, said):
        warnings.warn(text, stacklevel=2)
    if device:  # asked on the command line (a file's own DEVICE is VISSL's default, gpu, even on a CPU)
        out["device"] = "cpu" if root["MACHINE"]["DEVICE"] == "cpu" else "cuda"
    out[NEEDS], out[VISSL] = needs, True
    return out


def _override(root, text, source):
    """config.KEY.SUB=value applied to the file's keys (the value read as YAML, as Hydra reads it); the line
    that explains a key about launching, else None."""
    path, _, value = text.lstrip("+").partition("=")
    keys = path.split(".")[1:]
    node = root
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UsageError(f"{text}: {'.'.join(keys[:keys.index(key) + 1])} in {source} is not a section")
    try:
        node[keys[-1]] = load_yaml(value) if value.strip() else None
    except yaml.YAMLError:
        raise UsageError(f"{text}: its value cannot be read as YAML") from None
    section = keys[0]
    if section == "DISTRIBUTED" and keys[-1] in ("NUM_NODES", "NUM_PROC_PER_NODE"):
        return (f"{text}: the global batch is DATA.TRAIN.BATCHSIZE_PER_REPLICA x NUM_NODES x NUM_PROC_PER_NODE, "
                "as in VISSL; the processes are torchrun's (torchrun --nnodes N --nproc-per-node M -m vitfast.train)")
    if path == "config.MACHINE.DEVICE" and node[keys[-1]] not in ("cpu", "gpu"):
        raise UsageError(f"{text}: VISSL's MACHINE.DEVICE is cpu or gpu")
    if section in ("DISTRIBUTED", "MACHINE") and path != "config.MACHINE.DEVICE":
        return f"{text}: vitfast's ranks and devices are torchrun's and --device's; nothing to set"
    return None


def _data_folder(train, out, needs):
    """DATA.TRAIN's DATA_SOURCES and DATA_PATHS as --data: VISSL's disk_folder path is the training split's
    own folder (ImageNet's train/), ours the folder above it, holding train/ and val/."""
    sources, paths = train.get("DATA_SOURCES") or ["disk_folder"], train.get("DATA_PATHS") or []
    if any(s != "disk_folder" for s in sources):
        needs["data"] = f"DATA_SOURCES {', '.join(sources)} (vitfast reads image folders, VISSL's disk_folder)"
    elif len(paths) > 1:
        needs["data"] = f"DATA_PATHS of {len(paths)} folders (vitfast reads one)"
    elif paths:
        split = os.path.normpath(os.path.expanduser(str(paths[0])))
        if os.path.basename(split) == "train":
            out["data"] = f"folder:{os.path.dirname(split)}"
        else:
            needs["data"] = (f"DATA_PATHS {paths[0]} (vitfast's --data folder:DIR reads DIR/train/<class>/ and "
                             "DIR/val/<class>/; VISSL's path is the train folder itself)")


def _translate(c):
    """(our keys, what is refused, NEEDS' {key: why})."""
    out, refused, needs = {}, [], {}
    train = c["DATA"].get("TRAIN", {})
    for t in train.get("TRANSFORMS", []):
        name = t.get("name")
        if name == "ImgPilToMultiCrop":
            for key in ("total_num_crops", "num_crops", "size_crops", "crop_scales"):
                if key in t:
                    out[key] = t[key]
        elif name == "ImgPilColorDistortion":  # VISSL: ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) p 0.8, grayscale 0.2
            s = t.get("strength", 1.0)
            out["crop_color_jitter"], out["crop_grayscale"] = [0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s], 0.2
        elif name == "RandomGrayscale":
            out["crop_grayscale"] = t.get("p", 0.1)  # torchvision's default
        elif name == "ImgPilMultiCropRandomApply":
            refused += _per_crop(t)
        elif name == "RandomResizedCrop" and t.get("size"):  # a fine-tuning config's training crop
            out["img_size"] = t["size"]
        elif name == "Normalize":
            out["mean"], out["std"] = list(t["mean"]), list(t["std"])
        elif name not in _COVERED:
            refused.append(f"transform {name} (vitfast's crops flip, colour-distort, grey, blur and solarise; "
                           "take it out of the file)")
    if "num_crops" in out:
        out.pop("img_size", None)  # the crops' sizes are the multi-crop transform's
    _data_folder(train, out, needs)
    if c["DATA"].get("NUM_DATALOADER_WORKERS") is not None:
        out["workers"] = c["DATA"]["NUM_DATALOADER_WORKERS"]
    dist = c.get("DISTRIBUTED", {})
    if "BATCHSIZE_PER_REPLICA" in train:
        out["batch_size"] = train["BATCHSIZE_PER_REPLICA"] * dist.get("NUM_NODES", 1) * \
            dist.get("NUM_PROC_PER_NODE", 1)
    trunk = c["MODEL"].get("TRUNK", {})
    vit = trunk.get("VISION_TRANSFORMERS")
    if trunk.get("NAME") == "vision_transformer" and vit:
        dim = vit["HIDDEN_DIM"]
        out["model"] = f"vit_{_SIZES.get(dim, 'base')}_patch16_224"
        out["model_kwargs"] = {"img_size": vit["IMAGE_SIZE"], "patch_size": vit["PATCH_SIZE"], "embed_dim": dim,
                               "depth": vit["NUM_LAYERS"], "num_heads": vit["NUM_HEADS"],
                               "mlp_ratio": vit["MLP_DIM"] / dim, "qkv_bias": vit.get("QKV_BIAS", True)}
        if vit.get("DROP_PATH_RATE"):
            out["drop_path"] = vit["DROP_PATH_RATE"]
    elif trunk.get("NAME"):
        needs["model"] = f"trunk {trunk['NAME']} (vitfast trains Vision Transformers: a vision_transformer trunk)"
    loss = c.get("LOSS", {})
    for name, params in c["MODEL"].get("HEAD", {}).get("PARAMS", []):
        if name == "mlp" and len(params.get("dims", [])) == 2 and loss.get("name") in _SUPERVISED:
            pass  # a fine-tuning config's linear classifier: vitfast's own, sized by the data's classes
        elif name == "swav_head":
            out.update(ssl="swav", head_dims=list(params["dims"]), head_use_bn=params.get("use_bn", True),
                       num_clusters=list(params.get("num_clusters", [3000])))
        elif name == "dino_head":
            out.update(ssl="dino", head_out_dim=params["num_clusters"][0],
                       head_hidden_dim=params.get("hidden_dim", 2048),
                       head_bottleneck_dim=params.get("bottleneck_dim", 256),
                       norm_last_layer=params.get("normalize_last_layer", True))
            if params.get("use_bn"):
                refused.append("dino_head use_bn (vitfast's DINO head has no batch norm, as DINO's ViT default)")
        else:
            refused.append(f"head {name} (vitfast has swav_head and dino_head)")
    loss_name = loss.get("name")
    p = loss.get(loss_name, {}) if loss_name in _LOSS_KEYS else {}
    for theirs, ours in _LOSS_KEYS.get(loss_name, ()):
        if theirs in p:
            out[ours] = p[theirs]
    if loss_name == "swav_loss":
        queue = p.get("queue", {})
        if queue.get("queue_length"):
            out["queue_length"] = queue["queue_length"]
            if queue.get("start_iter"):
                refused.append(f"swav_loss queue start_iter {queue['start_iter']} (vitfast counts it in epochs: "
                               "config.LOSS.swav_loss.queue.start_iter=0 --queue-start-epoch E)")
    elif loss_name == "dino_loss":
        if p.get("teacher_temp_warmup_iters"):
            refused.append(f"dino_loss teacher_temp_warmup_iters {p['teacher_temp_warmup_iters']} (vitfast counts "
                           "it in epochs: config.LOSS.dino_loss.teacher_temp_warmup_iters=0 "
                           "--warmup-teacher-temp-epochs E)")
    elif loss_name and loss_name not in _SUPERVISED:
        refused.append(f"loss {loss_name} (vitfast has swav_loss and dino_loss, and cross entropy to fine-tune)")
    _optimizer(c.get("OPTIMIZER", {}), out, refused)
    weights = c["MODEL"].get("WEIGHTS_INIT", {}).get("PARAMS_FILE")
    if weights:  # its layout (a VISSL checkpoint, DINO's files, timm's) is read from the file itself
        out["init_checkpoint"] = weights
    return out, refused, needs


def _per_crop(t):
    """ImgPilMultiCropRandomApply: what it asks beyond our crops' own blur (DINO's probabilities: 1 and 0.1
    for the global crops, 0.5 for the rest) and solarisation (0.2, the second crop only)."""
    probs, names = list(t.get("prob", [])), [x.get("name") for x in t.get("transforms", [])]
    if names == ["ImgPilGaussianBlur"] and probs[:2] == [1.0, 0.1] and set(probs[2:]) <= {0.5}:
        return []
    if names == ["ImgPilRandomSolarize"] and len(probs) > 1 and probs[1] == 0.2 and not any(probs[:1] + probs[2:]):
        return []
    return [f"per-crop {'+'.join(map(str, names))} with probabilities {', '.join(map(str, probs))} (vitfast's crops "
            "blur and solarise as DINO's: blur 1, 0.1, then 0.5 for each local crop; solarise the second crop, 0.2)"]


def _optimizer(o, out, refused):
    """OPTIMIZER: the optimizer, weight decay, epochs and the lr schedule where ours have them."""
    if o.get("name"):
        if o["name"] in ("sgd", "adamw") and not o.get("use_larc"):
            out["opt"] = o["name"]
        else:
            larc = " (config.OPTIMIZER.use_larc=false for the optimizer without it)" if o.get("use_larc") else ""
            refused.append(f"optimizer {o['name']}{' with LARC' if o.get('use_larc') else ''} (vitfast has "
                           f"--opt adamw, sgd, lamb){larc}")
    for theirs, ours in (("weight_decay", "weight_decay"), ("betas", "betas"), ("num_epochs", "epochs")):
        if o.get(theirs) is not None:
            out[ours] = o[theirs]
    if out.get("opt") == "sgd" and o.get("momentum") is not None:  # VISSL's files give it for AdamW too
        out["momentum"] = o["momentum"]
    if out.get("opt") == "sgd" and o.get("nesterov") is False and out.get("momentum", 0.9) > 0:
        refused.append("nesterov False (vitfast's SGD with momentum is Nesterov's: config.OPTIMIZER.nesterov=true)")
    if o.get("regularize_bias") and o.get("weight_decay"):
        refused.append("regularize_bias (vitfast decays no biases, norms or tokens: "
                       "config.OPTIMIZER.regularize_bias=false)")
    schedulers = o.get("param_schedulers", {})
    if schedulers.get("lr"):
        _lr_schedule(schedulers["lr"], out, refused)
    wd = schedulers.get("weight_decay")
    if wd and wd.get("name") == "cosine":  # DINO's 0.04 -> 0.4
        out["weight_decay"], out["weight_decay_end"] = wd["start_value"], wd["end_value"]
    elif wd and wd.get("name") not in (None, "constant"):
        refused.append(f"weight decay schedule {wd['name']} (vitfast has constant and cosine)")
    head = o.get("head_optimizer_params") or {}
    for key in ("use_different_lr", "use_different_wd"):
        if head.get(key):
            refused.append(f"head_optimizer_params {key} (one rate and decay for the whole model: "
                           f"config.OPTIMIZER.head_optimizer_params.{key}=false)")


def _lr_schedule(lr, out, refused):
    """param_schedulers.lr: cosine, constant, or composite linear warmup -> cosine (its lengths fractions of
    the run); auto_lr_scaling's base_value at base_lr_batch_size is our lr at --lr-base-size."""
    scaling = lr.get("auto_lr_scaling", {})
    name, peak = lr.get("name"), None
    if name == "composite" and [p.get("name") for p in lr.get("schedulers", [])] == ["linear", "cosine"]:
        warm, decay = lr["schedulers"]
        out["sched"], out["warmup_lr"], out["min_lr"] = "cosine", warm["start_value"], decay["end_value"]
        peak = decay["start_value"]
        if out.get("epochs"):
            out["warmup_epochs"] = round(lr["lengths"][0] * out["epochs"], 3)
        else:
            refused.append("lr warmup length (a fraction of OPTIMIZER.num_epochs, which is not given: "
                           "config.OPTIMIZER.num_epochs=N)")
    elif name == "cosine":
        out["sched"], peak, out["min_lr"] = "cosine", lr["start_value"], lr["end_value"]
    elif name == "constant":
        out["sched"], peak = "constant", lr["value"]
    elif name:
        refused.append(f"lr schedule {name} (vitfast has cosine, linear, step, constant)")
    if scaling.get("auto_scale"):
        out["lr"], out["lr_base_size"] = scaling["base_value"], scaling.get("base_lr_batch_size", 256)
        if scaling.get("scaling_type", "linear") != "linear":
            refused.append(f"lr scaling {scaling['scaling_type']} (vitfast scales linearly)")
    elif peak is not None:  # the rate at the file's own batch, not scaled (DINO's and SwAV's defaults would)
        out["lr"], out["lr_base_size"] = peak, None
