"""VISSL's YAML configs read as vitfast configs where our options cover them, so that
`python -m vitfast.train -c vissl_config.yaml` trains what it describes: the multi-crop transform and
normalisation (DATA.TRAIN.TRANSFORMS), the data path and global batch, the ViT trunk
(MODEL.TRUNK.VISION_TRANSFORMERS), the SwAV or DINO head (MODEL.HEAD.PARAMS) and loss (LOSS), or a
fine-tuning config's classifier and initial weights (MODEL.WEIGHTS_INIT.PARAMS_FILE), and the optimizer,
its epochs and schedules (OPTIMIZER). What those sections hold that we do not do is reported in one
warning, never silently dropped; the rest of a VISSL file (hooks, machine, checkpointing) is VISSL's own
and not read. Keys a file leaves out take vitfast's defaults, not VISSL's."""
import warnings

from ...cli import UsageError

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


def translate_vissl(data, source="VISSL config"):
    try:
        out, ignored = _translate(data.get("config", data))
    except KeyError as e:
        raise UsageError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError, IndexError) as e:
        raise UsageError(f"{source}: a field has the wrong type ({e})") from None
    if ignored:
        warnings.warn(f"{source}: no vitfast equivalent for {'; '.join(ignored)}; ignored", stacklevel=2)
    return out


def _translate(c):
    out, ignored = {}, []
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
            ignored += _per_crop(t)
        elif name == "RandomResizedCrop" and t.get("size"):  # a fine-tuning config's training crop
            out["img_size"] = t["size"]
        elif name == "Normalize":
            out["mean"], out["std"] = list(t["mean"]), list(t["std"])
        elif name not in _COVERED:
            ignored.append(f"transform {name}")
    if "num_crops" in out:
        out.pop("img_size", None)  # the crops' sizes are the multi-crop transform's
    paths = train.get("DATA_PATHS") or []
    if len(paths) == 1:
        out["data"] = f"folder:{paths[0]}"
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
        ignored.append(f"trunk {trunk['NAME']} (give --model)")
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
                ignored.append("dino_head use_bn")
        else:
            ignored.append(f"head {name}")
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
                ignored.append(f"swav_loss queue start_iter {queue['start_iter']} (iterations: give "
                               "--queue-start-epoch)")
    elif loss_name == "dino_loss":
        if p.get("teacher_temp_warmup_iters"):
            ignored.append(f"dino_loss teacher_temp_warmup_iters {p['teacher_temp_warmup_iters']} (iterations: "
                           "give --warmup-teacher-temp-epochs)")
    elif loss_name and loss_name not in _SUPERVISED:
        ignored.append(f"loss {loss_name}")
    _optimizer(c.get("OPTIMIZER", {}), out, ignored)
    weights = c["MODEL"].get("WEIGHTS_INIT", {}).get("PARAMS_FILE")
    if weights:  # its layout (a VISSL checkpoint, DINO's files, timm's) is read from the file itself
        out["init_checkpoint"] = weights
    return out, ignored


def _per_crop(t):
    """ImgPilMultiCropRandomApply: what it asks beyond our crops' own blur (DINO's probabilities: 1 and 0.1
    for the global crops, 0.5 for the rest) and solarisation (0.2, the second crop only)."""
    probs, names = list(t.get("prob", [])), [x.get("name") for x in t.get("transforms", [])]
    if names == ["ImgPilGaussianBlur"] and probs[:2] == [1.0, 0.1] and set(probs[2:]) <= {0.5}:
        return []
    if names == ["ImgPilRandomSolarize"] and len(probs) > 1 and probs[1] == 0.2 and not any(probs[:1] + probs[2:]):
        return []
    return [f"per-crop {'+'.join(map(str, names))} with probabilities {probs} (the method's own are used)"]


def _optimizer(o, out, ignored):
    """OPTIMIZER: the optimizer, weight decay, epochs and the lr schedule where ours have them."""
    if o.get("name"):
        if o["name"] in ("sgd", "adamw") and not o.get("use_larc"):
            out["opt"] = o["name"]
        else:
            ignored.append(f"optimizer {o['name']}{' with LARC' if o.get('use_larc') else ''} (vitfast has "
                           "--opt adamw, sgd, lamb)")
    for theirs, ours in (("weight_decay", "weight_decay"), ("betas", "betas"), ("num_epochs", "epochs")):
        if o.get(theirs) is not None:
            out[ours] = o[theirs]
    if out.get("opt") == "sgd" and o.get("momentum") is not None:  # VISSL's files give it for AdamW too
        out["momentum"] = o["momentum"]
    if out.get("opt") == "sgd" and o.get("nesterov") is False and out.get("momentum", 0.9) > 0:
        ignored.append("nesterov False (vitfast's SGD with momentum is Nesterov's)")
    if o.get("regularize_bias") and o.get("weight_decay"):
        ignored.append("regularize_bias (vitfast decays no biases, norms or tokens)")
    schedulers = o.get("param_schedulers", {})
    if schedulers.get("lr"):
        _lr_schedule(schedulers["lr"], out, ignored)
    wd = schedulers.get("weight_decay")
    if wd and wd.get("name") == "cosine":  # DINO's 0.04 -> 0.4
        out["weight_decay"], out["weight_decay_end"] = wd["start_value"], wd["end_value"]
    elif wd and wd.get("name") not in (None, "constant"):
        ignored.append(f"weight decay schedule {wd['name']}")
    head = o.get("head_optimizer_params") or {}
    for key in ("use_different_lr", "use_different_wd"):
        if head.get(key):
            ignored.append(f"head_optimizer_params {key} (one rate and decay for the whole model)")


def _lr_schedule(lr, out, ignored):
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
            ignored.append("lr warmup length (a fraction of OPTIMIZER.num_epochs, which is not given)")
    elif name == "cosine":
        out["sched"], peak, out["min_lr"] = "cosine", lr["start_value"], lr["end_value"]
    elif name == "constant":
        out["sched"], peak = "constant", lr["value"]
    elif name:
        ignored.append(f"lr schedule {name} (vitfast has cosine, linear, step, constant)")
    if scaling.get("auto_scale"):
        out["lr"], out["lr_base_size"] = scaling["base_value"], scaling.get("base_lr_batch_size", 256)
        if scaling.get("scaling_type", "linear") != "linear":
            ignored.append(f"lr scaling {scaling['scaling_type']} (vitfast scales linearly)")
    elif peak is not None:  # the rate at the file's own batch, not scaled (DINO's and SwAV's defaults would)
        out["lr"], out["lr_base_size"] = peak, None
