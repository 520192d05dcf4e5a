"""python -m vitfast.train: train any registered model, on a CPU, one GPU or many (torchrun).

With no arguments it trains a small ViT on the built-in dataset and prints the trained model's
post-training-quantized accuracy. Configuration: `-c FILE|NAME` sets defaults, flags override them,
`--set key=value` overrides anything (see vitfast/training/config.py). The loop below reads top to
bottom: build, resume, train (warmup-cosine per step, accumulation, autocast, clipping, EMA),
evaluate, checkpoint, summarise.
"""
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import vitfast
from vitfast import progress
from vitfast.cli import UsageError, blame, one_line, run
from vitfast.data import (Mixup, RepeatAugSampler, ShardSampler, ShuffleSampler, UnreadableImagesError, create_dataset,
                          create_transform)
from vitfast.data.device import DeviceImages, decode_transform
from vitfast.data.device_randaug import DeviceRandAugment
from vitfast.data.holdout import hold_out
from vitfast.models import CheckpointMismatchError, get_model_config, load_for_finetune, save_checkpoint
from vitfast.layers import set_grad_checkpointing
from vitfast.training import config as config_lib
from vitfast.training.distributed import Dist
from vitfast.training.ema import ModelEma
from vitfast.training.evaluate import evaluate
from vitfast.training.interrupt import StopRequest, ignore_sigint
from vitfast.training.logger import RunLogger
from vitfast.training.losses import NonFiniteWatch, distillation_loss, training_loss
from vitfast.training.optim import create_optimizer, lr_at
from vitfast.training.rundir import discard_failed_start, open_output, plan_output
from vitfast.training.state import read_training_checkpoint, rng_state, save_state, set_rng_state
from vitfast.training.teacher import build_teacher

# The default run (no arguments): a small ViT with 4x4 patches on the built-in 32x32 data; it reaches
# >= 90% validation accuracy in about 300 steps (see the README for the measured time).
DEFAULT_RUN = dict(model="vit_pico_patch4_32", data="builtin", epochs=4, batch_size=128, lr=2e-3,
                   warmup=0.4, weight_decay=0.05, smoothing=0.0, scale=[1.0, 1.0], crop_pct=1.0,
                   mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])


class SeededSamples(Dataset):
    """Seeds the random transforms per (seed, epoch, index): augmentation is then the same whatever the
    worker count, and a resumed run sees exactly the images the uninterrupted one did."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            return self.dataset[i]


class EpochSampler(Sampler):
    """This rank's indices for one epoch (shuffled from seed and epoch), after skipping `skip` of them."""

    def __init__(self, base, skip=0):
        self.base, self.skip = base, skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self):
        return max(0, len(self.base) - self.skip)


def make_sampler(dataset, cfg, dist, train):
    """This rank's share: one seeded shuffle per epoch split over ranks (with DeiT's repeated
    augmentation when asked) for training; every sample exactly once, unpadded, for evaluation."""
    if not train:
        return ShardSampler(dataset, dist.world_size, dist.rank)
    if cfg["repeated_aug"] > 1:
        return RepeatAugSampler(dataset, dist.world_size, dist.rank, cfg["seed"], num_repeats=cfg["repeated_aug"])
    return ShuffleSampler(dataset, dist.world_size, dist.rank, cfg["seed"])


def loader_for(dataset, sampler, batch_size, cfg, epoch, train):
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg["workers"], drop_last=train,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      worker_init_fn=ignore_sigint if cfg["workers"] else None,  # Ctrl-C is the main process's
                      # its own generator: creating the iterator must not draw from the global RNG
                      generator=torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch))


def unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    origin = {}
    cfg = config_lib.resolve(argv, base=DEFAULT_RUN if uses_default_run(argv) else None, origins=origin)

    def where(key):
        return origin.get(key, config_lib.flag_of(key))

    dist = Dist(cfg["device"])
    device = dist.device
    say = progress.echo if dist.is_main else (lambda *a: None)
    out, resume = plan_output(cfg, dist)  # decided and checked now; created only once everything is built
    state = None
    if resume:  # the run goes on as it was configured: only where and how it runs may change
        state = read_training_checkpoint(resume, "--resume")
        cfg = config_lib.for_resume(state["config"], cfg, origin, resume)
        if state.get("total_steps") is not None and state["step"] >= state["total_steps"]:
            return finished_run(out, state, say, dist)
    # before minutes of data loading, not after (a resumed run's weights come from its checkpoint)
    for key in ("teacher_checkpoint",) + (() if resume else ("init_checkpoint",)):
        if cfg[key] and not os.path.isfile(cfg[key]):
            raise UsageError(f"{where(key)}: no file at {cfg[key]!r}")
    if cfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    progress.set_quiet(cfg["quiet"] or not dist.is_main)
    torch.manual_seed(cfg["seed"])

    # ---- data
    model_defaults = get_model_config(cfg["model"])
    img_size = cfg["img_size"] or cfg["model_kwargs"].get("img_size") or model_defaults["input_size"][-1]
    norm = dict(mean=cfg["mean"] or model_defaults["mean"], std=cfg["std"] or model_defaults["std"])
    crop_pct = cfg["crop_pct"] or (1.0 if img_size < 64 else model_defaults["crop_pct"])
    train_tf = create_transform(img_size, train=True, crop_pct=crop_pct, hflip=cfg["hflip"], auto_augment=cfg["aa"],
                                color_jitter=cfg["color_jitter"], re_prob=cfg["reprob"], scale=tuple(cfg["scale"]), **norm)
    eval_tf = create_transform(img_size, train=False, crop_pct=crop_pct, **norm)
    with blame(where("data")):
        # on the device, the images are decoded once at img_size and augmented there
        train_set = create_dataset(cfg["data"], "train", download=cfg["download"], strict=cfg["strict_data"],
                                   transform=decode_transform(img_size) if cfg["data_on_device"] else train_tf)
        val_set = create_dataset(cfg["data"], "train" if cfg["holdout"] else "val", transform=eval_tf,
                                 download=cfg["download"], strict=cfg["strict_data"])
    if cfg["holdout"]:
        with blame(where("holdout")):
            train_set, val_set = hold_out(train_set, val_set, cfg["holdout"])
    num_classes = train_set.num_classes
    seeded = SeededSamples(train_set, cfg["seed"])
    micro = cfg["batch_size"] // (dist.world_size * cfg["grad_accum_steps"])
    if micro < 1 or micro * dist.world_size * cfg["grad_accum_steps"] != cfg["batch_size"]:
        raise UsageError(f"--batch-size {cfg['batch_size']} must split evenly over {dist.world_size} "
                         f"rank(s) x {cfg['grad_accum_steps']} accumulation step(s)")
    train_sampler = make_sampler(train_set, cfg, dist, train=True)
    device_images = None
    if cfg["data_on_device"]:
        with blame(where("data_on_device")):
            randaug = DeviceRandAugment.from_spec(cfg["aa"]) if cfg["aa"] else None
            device_images = DeviceImages(train_set, device, norm["mean"], norm["std"], tuple(cfg["scale"]),
                                         hflip=cfg["hflip"], re_prob=cfg["reprob"], randaug=randaug,
                                         workers=cfg["workers"])
    steps_per_epoch = len(train_sampler) // (micro * cfg["grad_accum_steps"])
    if steps_per_epoch < 1:
        raise UsageError(f"--batch-size {cfg['batch_size']}: the training split of {cfg['data']} holds only "
                         f"{len(train_set)} images, fewer than one global batch")
    val_loader = loader_for(val_set, make_sampler(val_set, cfg, dist, train=False),
                            cfg["eval_batch_size"] or micro, cfg, 0, train=False)
    total_steps = cfg["steps"] or (cfg["epochs"] or 300) * steps_per_epoch
    warmup_steps = int(cfg["warmup"] if cfg["steps"] else cfg["warmup"] * steps_per_epoch)
    mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], label_smoothing=cfg["smoothing"],
                  num_classes=num_classes) if cfg["mixup"] > 0 or cfg["cutmix"] > 0 else None

    # ---- model
    kwargs = dict(cfg["model_kwargs"], num_classes=num_classes)
    if cfg["img_size"]:
        kwargs["img_size"] = cfg["img_size"]
    if cfg["drop_path"] is not None:
        kwargs["drop_path_rate"] = cfg["drop_path"]
    with blame(f"--model {cfg['model']} (with --model-kwargs / --img-size)"):
        model = vitfast.create_model(cfg["model"], backend=cfg["backend"], **kwargs)
    if cfg["init_checkpoint"] and not resume:
        path = cfg["init_checkpoint"]
        try:
            result = load_for_finetune(model, path)
        except CheckpointMismatchError as e:
            raise UsageError(f"--init-checkpoint {path} does not fit {cfg['model']} ({e.brief()}); "
                             "only the classifier head may differ") from e
        except (ValueError, TypeError, OSError, RuntimeError) as e:
            raise UsageError(f"--init-checkpoint {path}: cannot read it as weights ({one_line(e)})") from e
        fresh = sorted(set(result.missing_keys) | {k for k, _, _ in result.mismatched_keys} |
                       set(getattr(result, "fresh_keys", ())))
        say(f"initialised from {path}" + (f"; freshly initialised for {num_classes} classes: {', '.join(fresh)}"
                                          if fresh else ""))
    if cfg["grad_checkpointing"]:
        set_grad_checkpointing(model)
    if cfg["quant"]:
        from vitfast.quant import parse_recipe, prepare_qat

        prepare_qat(model, parse_recipe(cfg["quant"]), grad=cfg["quant_grad"])
    model.to(device)
    lr = cfg["lr"] * (cfg["batch_size"] / cfg["lr_base_size"] if cfg["lr_base_size"] else 1.0)
    optimizer = create_optimizer(model, cfg["opt"], lr, cfg["weight_decay"], cfg["momentum"], cfg["betas"])
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg["amp"]]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg["amp"] == "fp16")
    ema = ModelEma(model, cfg["ema"]) if cfg["ema"] > 0 else None
    teacher = build_teacher(cfg, num_classes, img_size, device) if cfg["teacher"] else None

    # ---- resume
    step, epoch, done_in_epoch, best = 0, 0, 0, {"acc1": -1.0}
    last_path, best_path = os.path.join(out, "checkpoint-last.pt"), os.path.join(out, "checkpoint-best.pt")
    resumed_rng = None
    if resume:
        with blame(f"--resume {resume}", (ValueError, RuntimeError, KeyError)):
            unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
        step, epoch, done_in_epoch, best = state["step"], state["epoch"], state["batch_in_epoch"], state["best"]
        resumed_rng = state["rng"]
        if step >= total_steps:  # a checkpoint of an earlier release, without its total: the same answer
            return finished_run(out, dict(state, total_steps=total_steps), say, dist)
    elif cfg["resume"] == "auto":
        say(f"--resume auto: no checkpoint in {out} yet; starting a new run")

    # ---- the output directory: everything above could still refuse the run
    created = open_output(out, cfg["overwrite"], say) if dist.is_main else False
    log = RunLogger(out, cfg, enabled=dist.is_main, use_wandb=cfg["wandb"])
    if resume:
        log.print(f"resumed from {resume} at step {step} (epoch {epoch}, batch {done_in_epoch})")
    if dist.is_main:
        config_lib.dump(cfg, os.path.join(out, "config.yaml"))
    train_model = model
    if dist.enabled:
        train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["compile"]:
        train_model = torch.compile(train_model)
    if resumed_rng is not None:
        set_rng_state(resumed_rng)  # last: everything above may have drawn random numbers

    watch = NonFiniteWatch(device)

    def check_loss():
        bad = watch.check()
        if bad is not None:
            raise SystemExit(f"vitfast.train: the loss is {bad[1]} at step {bad[0]}; stopping. The last good checkpoint, "
                             f"if any, is intact: {last_path}")

    def checkpoint(path):
        check_loss()
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():
            raise SystemExit(f"vitfast.train: the weights became inf/NaN at step {step} (epoch {epoch}); stopping "
                             f"without saving them. The last good checkpoint, if any, is intact: {last_path}")
        if dist.is_main:
            save_state(path, {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                              "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema else None,
                              "rng": rng_state(), "step": step, "epoch": epoch, "batch_in_epoch": done_in_epoch,
                              "total_steps": total_steps, "best": best, "config": cfg,
                              "vitfast_version": vitfast.__version__})

    # ---- train
    epochs = -(-total_steps // steps_per_epoch)
    length = "" if cfg["steps"] or cfg["epochs"] else ", the default length: no --epochs or --steps was given"
    log.print(f"{cfg['model']}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"{len(train_set)} training / {len(val_set)} validation images, {num_classes} classes, "
              f"{plural(total_steps, 'step')} of {cfg['batch_size']} ({plural(epochs, 'epoch')}{length}) on "
              f"{dist.world_size} x {device}; output {out}")
    start, seen, stop_reason, val = time.perf_counter(), 0, None, None
    last_log = (start, 0)  # (time, images) at the previous log line: each line reports its interval's rate
    accum = cfg["grad_accum_steps"]
    first_step = step
    stop = StopRequest(enabled=not dist.enabled)  # torchrun's ranks would each stop at another step
    try:
        stop.install()
        while step < total_steps and stop_reason is None:
            seeded.epoch = epoch
            train_sampler.set_epoch(epoch)
            if device_images is not None:
                loader = device_images.batches(train_sampler, micro, cfg["seed"], epoch, skip=done_in_epoch)
            else:
                loader = loader_for(seeded, EpochSampler(train_sampler, skip=done_in_epoch * micro), micro, cfg, epoch,
                                    True)
            train_model.train()
            done = done_in_epoch // accum  # steps of this epoch already taken (a resumed run)
            log.epoch_bar(epoch, epochs, min(steps_per_epoch, done + total_steps - step), done)
            for x, y in loader:
                if done_in_epoch // accum >= steps_per_epoch or step >= total_steps:
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if mixup is not None:
                    x, y = mixup(x, y)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    output = train_model(x)
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(x)
                        loss = distillation_loss(output, teacher_logits, y, cfg["distill_type"], cfg["distill_alpha"],
                                                 cfg["distill_tau"], cfg["smoothing"])
                    else:
                        loss = training_loss(output, y, cfg["smoothing"])
                watch.update(loss, step)  # read at log steps and checkpoints: no wait for the GPU per step
                scaler.scale(loss / accum).backward()
                done_in_epoch += 1
                seen += x.shape[0] * dist.world_size
                if done_in_epoch % accum:
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, warmup_steps, lr, cfg["warmup_lr"], cfg["min_lr"], cfg["sched"],
                                        cfg["decay_milestones"], cfg["decay_rate"])
                if cfg["clip_grad"]:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad"])
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(unwrap(model))
                step += 1
                log.advance()
                if step % cfg["log_every"] == 0 or step == total_steps:
                    check_loss()
                    loss_value, now = loss.item(), time.perf_counter()  # the GPU has caught up: rates are true
                    elapsed = now - start
                    log.log({"step": step, "epoch": epoch, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                             "images_per_second": (seen - last_log[1]) / max(now - last_log[0], 1e-9),
                             "eta_s": elapsed / max(step - first_step, 1) * (total_steps - step)})
                    last_log = (now, seen)
                if cfg["save_every"] and step % cfg["save_every"] == 0:
                    checkpoint(last_path)
                if cfg["max_time"] and time.perf_counter() - start > cfg["max_time"]:
                    stop_reason = f"--max-time {cfg['max_time']} s reached"
                    break
                if stop.requested:  # Ctrl-C: this step is done; save where the next run picks up
                    break
            log.end_epoch()
            if stop.requested:
                checkpoint(last_path)
                stop.saved = True
                raise KeyboardInterrupt
            epoch_done = done_in_epoch // accum >= steps_per_epoch
            if epoch_done:
                epoch, done_in_epoch = epoch + 1, 0
            if (epoch_done and epoch % cfg["eval_every"] == 0) or step >= total_steps or stop_reason:
                stop.safe = True  # no training state moves while validating: Ctrl-C can stop here at once
                val = evaluate(ema.module if ema else model, val_loader, device, amp_dtype, dist, desc="validation")
                stop.safe = False
                log.log({"step": step, "epoch": epoch, **val}, kind="val")
                if val["acc1"] > best["acc1"]:
                    best = {"acc1": val["acc1"], "step": step}
                    checkpoint(best_path)
                checkpoint(last_path)  # with each evaluation: a short epoch need not wait for a write
    except BaseException as e:
        log.end_epoch()
        if isinstance(e, KeyboardInterrupt) and stop.at_boundary:  # Ctrl-C while validating
            checkpoint(last_path)
            stop.saved = True
        log.close()
        if dist.is_main and not resume and step == first_step:  # a failed start leaves no half-made run
            discard_failed_start(out, created)
        elif isinstance(e, KeyboardInterrupt) and stop.requested:
            say(f"stopped at step {step} of {total_steps}; " + (
                f"{last_path} holds it" if stop.saved else "no checkpoint of it was written (Ctrl-C twice)") +
                f". Continue from the last checkpoint with: python -m vitfast.train --output {out} --resume auto")
        if isinstance(e, UnreadableImagesError):  # the data, not vitfast: one line, like a missing dataset
            raise UsageError(f"--data {cfg['data']}: {one_line(e)}") from e
        raise
    finally:
        stop.restore()
    check_loss()
    train_seconds = time.perf_counter() - start

    # ---- summary and post-training quantization
    final = ema.module if ema else model
    if val is None:
        val = evaluate(final, val_loader, device, amp_dtype, dist, desc="validation")
    summary = {"val_acc1": val["acc1"], "val_acc5": val["acc5"], "val_loss": val["loss"],
               "images_per_second": seen / max(train_seconds, 1e-9), "train_seconds": train_seconds,
               "steps": step, "best_acc1": best["acc1"], "stopped": stop_reason}
    if "exit_acc1" in val:
        summary["val_exit_acc1"] = val["exit_acc1"]
    if cfg["ptq_report"]:
        summary["ptq"] = ptq_report(final, cfg["ptq_report"], val_loader, device, dist, log, val)
    if dist.is_main:
        save_checkpoint(final, os.path.join(out, "model.safetensors"), config=cfg)  # eval needs no --data
        from vitfast.models.checkpoint import atomic_write

        atomic_write(os.path.join(out, "summary.json"),
                     lambda tmp: open(tmp, "w").write(json.dumps(summary, indent=2)))
        log.print(json.dumps({k: v for k, v in summary.items() if k != "ptq"}))
        log.print(f"\ndone: {out}  (best validation top-1 {best['acc1']:.2f}% at step {best.get('step')}; "
                  f"summary.json, checkpoints, model.safetensors)\n"
                  f"  curves:   tensorboard --logdir {out}\n"
                  f"  evaluate: python -m vitfast.eval --checkpoint {os.path.join(out, 'model.safetensors')} "
                  "--quant fp32,bf16,int8")
    log.close()
    dist.close()
    return summary


def finished_run(out, state, say, dist):
    """A resumed run that has nothing left to train: said so, and not one of its files is touched."""
    summary_path, last = os.path.join(out, "summary.json"), os.path.join(out, "checkpoint-last.pt")
    results = (f"Its results: {summary_path}" if os.path.isfile(summary_path) else
               f"It stopped before its summary was written: python -m vitfast.eval --checkpoint {last} evaluates it")
    say(f"{out}: the run is finished (step {state['step']} of {state['total_steps']}); nothing to do. {results}. "
        f"To train on from its weights, start a new run: --init-checkpoint {last} --output NEW_FOLDER")
    dist.close()
    if not os.path.isfile(summary_path):
        return {"steps": state["step"]}
    with open(summary_path) as f:
        return json.load(f)


def ptq_report(model, formats, loader, device, dist, log, fp32):
    """Post-training quantization of the trained model into each format, evaluated side by side (scaled
    formats such as INT8 with dynamic activation scales; vitfast.eval --calib-steps calibrates static ones)."""
    from vitfast.quant import convert_ptq, parse_recipe

    rows = {"fp32": {"acc1": fp32["acc1"], "acc5": fp32["acc5"]}}
    for fmt in formats:
        res = evaluate(convert_ptq(model, parse_recipe(fmt)), loader, device, None, dist, desc=f"PTQ {fmt}")
        rows[fmt.lower()] = {"acc1": res["acc1"], "acc5": res["acc5"]}
    log.print("\npost-training quantization of the trained model (validation split):")
    log.print(f"{'format':<10}{'top-1 %':>9}{'top-5 %':>9}")
    for fmt, r in rows.items():
        log.print(f"{fmt:<10}{r['acc1']:>9.2f}{r['acc5']:>9.2f}")
    return rows


def plural(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def uses_default_run(argv):
    """The built-in run is the base unless a config file, a model or a dataset is given."""
    chosen = {"-c", "--config", "--model", "--data"}
    return not any(a.split("=")[0] in chosen for a in argv)


if __name__ == "__main__":
    run("vitfast.train", main)
