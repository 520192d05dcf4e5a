"""python -m vitfast.train: train any registered model, on a CPU, one GPU or many (torchrun).

With no arguments it trains a small ViT on the built-in dataset and prints the trained model's
post-training-quantized accuracy. Configuration: `-c FILE|NAME` sets defaults, flags override them,
`--set key=value` overrides anything (see vitfast/training/config.py). The loop below reads top to
bottom: build, resume, train (warmup-cosine per step, accumulation, autocast, clipping), evaluate,
checkpoint, summarise. What the objective changes (views, loss, EMA or teacher, what is validated and
reported) is the method object's (vitfast/training/methods): one loop drives every method.
"""
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

import vitfast
from vitfast import progress
from vitfast.cli import UsageError, blame, is_out_of_memory, one_line, run
from vitfast.data import UnreadableImagesError
from vitfast.layers import set_grad_checkpointing
from vitfast.models import CheckpointMismatchError, load_for_finetune, save_checkpoint
from vitfast.training import config as config_lib
from vitfast.training.distributed import Dist
from vitfast.training.interrupt import StopRequest
from vitfast.training.logger import RunLogger
from vitfast.training.losses import NonFiniteWatch
from vitfast.training.methods import create_method
from vitfast.training.optim import create_optimizer, lr_at, warmup_length
from vitfast.training.parallel import create_parallel
from vitfast.training.rundir import discard_failed_start, last_checkpoint, open_output, plan_output
from vitfast.training.run_data import build_data
from vitfast.training.state import load_state, read_training_checkpoint, rng_state, set_rng_state


def to_device(x, device):
    """A batch's images (a tensor, or a list of them: a method's views) on the device."""
    if isinstance(x, (list, tuple)):
        return [v.to(device, non_blocking=True) for v in x]
    return x.to(device, non_blocking=True)


def build_model(cfg, num_classes, resume, device, say):
    """The model the config names, for num_classes, on the run's device: initialised from
    --init-checkpoint (a new run), with activation checkpointing and QAT when asked."""
    kwargs = dict(config_lib.creation_kwargs(cfg), num_classes=num_classes)
    with blame(f"--model {cfg['model']} (with --model-kwargs / --img-size)"):
        model = vitfast.create_model(cfg["model"], backend=cfg["backend"], **kwargs)
    if cfg["init_checkpoint"] and not resume:
        initialise(model, cfg, num_classes, say)
    if cfg["grad_checkpointing"]:
        set_grad_checkpointing(model)
    if cfg["quant"]:
        from vitfast.quant import parse_recipe, prepare_qat

        prepare_qat(model, parse_recipe(cfg["quant"]), grad=cfg["quant_grad"])
    return model.to(device)


def initialise(model, cfg, num_classes, say):
    """--init-checkpoint: the file's weights into model, all but the classifier head, said in one line."""
    path = cfg["init_checkpoint"]
    try:
        result = load_for_finetune(model, path, cfg["init_weights"])
    except CheckpointMismatchError as e:
        raise UsageError(f"--init-checkpoint {path} does not fit {cfg['model']} ({e.brief()}); "
                         "only the classifier head may differ") from e
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        raise UsageError(f"--init-checkpoint {path}: cannot read it as weights ({one_line(e)})") from e
    fresh = sorted(set(result.missing_keys) | {k for k, _, _ in result.mismatched_keys} |
                   set(getattr(result, "fresh_keys", ())))
    which = f": {result.weights}" if getattr(result, "weights", None) else ""
    say(f"initialised from {path}{which}" + (f"; freshly initialised for {num_classes} classes: {', '.join(fresh)}"
                                             if fresh else ""))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    origin = {}
    cfg = config_lib.resolve(argv, origins=origin)

    def where(key):
        return origin.get(key, config_lib.flag_of(key))

    dist = Dist(cfg["device"], cfg["dist_timeout"])
    device = dist.device
    say = progress.echo if dist.is_main else (lambda *a: None)
    out, resume = plan_output(cfg, dist)  # decided and checked now; created only once everything is built
    state = None
    if resume:  # the run goes on as it was configured: only where and how it runs may change
        state = read_training_checkpoint(resume, "--resume")
        cfg = config_lib.for_resume(state["config"], cfg, origin, resume)
        run_dir = os.path.dirname(os.path.abspath(resume))
        extension = lengthen(cfg, state, run_dir, out, resume)
        if extension is None and state.get("total_steps") is not None and state["step"] >= state["total_steps"] and \
                finished(run_dir, state):
            return finished_run(run_dir, state, say, dist)
    # before minutes of data loading, not after (a resumed run's weights come from its checkpoint)
    for key in ("teacher_checkpoint",) + (() if resume else ("init_checkpoint",)):
        if cfg[key] and not os.path.exists(cfg[key]):
            raise UsageError(f"{where(key)}: no file at {cfg[key]!r}")
    if cfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    progress.set_quiet(cfg["quiet"] or not dist.is_main)
    torch.manual_seed(cfg["seed"])

    # ---- data, method, model, and how the ranks hold it
    parallel = create_parallel(cfg, dist, say)
    method = create_method(cfg)
    data = build_data(cfg, dist, where, method.train_transform)
    num_classes, micro, steps_per_epoch = data.num_classes, data.micro, data.steps_per_epoch
    total_steps = cfg["steps"] or (cfg["epochs"] or 300) * steps_per_epoch
    warmup_steps, warmup_note = plan_warmup(cfg, origin, where, steps_per_epoch, total_steps)
    model = build_model(cfg, num_classes, resume, device, say)
    trained = method.prepare(model, SimpleNamespace(  # what the optimizer trains
        num_classes=num_classes, img_size=data.img_size, device=device, dist=dist, data=data, say=say,
        total_steps=total_steps, steps_per_epoch=steps_per_epoch))
    # wrapped before the optimizer is made: sharding replaces the parameters (the optimizer takes the shards)
    train_model = parallel.wrap(trained, method.held())
    lr = cfg["lr"] * (cfg["batch_size"] / cfg["lr_base_size"] if cfg["lr_base_size"] else 1.0)
    optimizer = create_optimizer(trained, cfg["opt"], lr, cfg["weight_decay"], cfg["momentum"], cfg["betas"])
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg["amp"]]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg["amp"] == "fp16")

    # ---- resume
    step, epoch, done_in_epoch, best, val, kept, schedule_changes = 0, 0, 0, {"acc1": -1.0}, None, [], []
    seen_before, seconds_before = 0, 0.0  # images and seconds of training before this resume
    last_path, best_path = (os.path.join(out, f"checkpoint-{name}{parallel.suffix}") for name in ("last", "best"))
    resumed_rng = None
    if resume:
        with blame(f"--resume {resume}", (ValueError, RuntimeError, KeyError)):
            parallel.load(state, model, trained, optimizer, method.state)
            scaler.load_state_dict(state["scaler"])
            method.load_state(state)
        step, epoch, done_in_epoch, best = state["step"], state["epoch"], state["batch_in_epoch"], state["best"]
        resumed_rng, val, kept = state["rng"], state.get("val"), state.get("kept", [])
        seen_before, seconds_before = state.get("seen", 0), state.get("train_seconds", 0.0)
        if step >= total_steps and finished(run_dir, state):  # a checkpoint of an earlier release, without its total
            return finished_run(run_dir, dict(state, total_steps=total_steps), say, dist)
        schedule_changes = state.get("schedule_changes", [])
        if extension is not None:
            schedule_changes.append(dict(extension, step=step, from_steps=state.get("total_steps"),
                                         to_steps=total_steps))
    elif cfg["resume"] == "auto":
        say(f"--resume auto: no checkpoint in {out} yet; starting a new run")

    # ---- the output directory: everything above could still refuse the run
    created = open_output(out, cfg["overwrite"], say) if dist.is_main else False
    log = RunLogger(out, cfg, enabled=dist.is_main, use_wandb=cfg["wandb"])
    if resume and extension is not None:
        change = schedule_changes[-1]
        log.print(f"schedule lengthened ({change['flag']} {change['by']}): {change['from_steps']} -> "
                  f"{change['to_steps']} steps at step {step}; the learning rate follows the longer schedule from here")
        log.log({"step": step, **change}, kind="schedule")
    if resume:
        left = ("; its training is done, its outputs are not: writing them" if step >= total_steps else "") + \
            ("; first the validation it was stopped in" if state.get("pending_val") else "")
        log.print(f"resumed from {resume} at step {step} (epoch {epoch}, batch {done_in_epoch}){left}")
    record = config_lib.recorded(cfg)  # as config.yaml, the checkpoints and model.safetensors keep it
    if dist.is_main:
        config_lib.dump(record, os.path.join(out, "config.yaml"))
    if cfg["compile"]:
        train_model = torch.compile(train_model)
    if resumed_rng is not None:
        set_rng_state(resumed_rng)  # last: everything above may have drawn random numbers

    watch = NonFiniteWatch(device)

    def check_loss():
        bad = watch.check()
        if bad is not None:
            raise SystemExit(f"vitfast.train: the loss is {bad[1]} at step {bad[0]}; stopping{method.diverged()}. The "
                             f"last good checkpoint, if any, is intact: {last_path}")

    rng_before_val = None  # the random state a validation started from: a resumed run repeats it from there
    val_step = None  # the step of the last validation

    def checkpoint(path, pending_val=False):
        """pending_val: saved while validating (Ctrl-C), so that a resumed run validates first, from the
        random state the validation started from (a DataLoader draws its seed from it)."""
        check_loss()
        if not parallel.all_finite(list(trained.parameters())):
            raise SystemExit(f"vitfast.train: the weights became inf/NaN at step {step} (epoch {epoch}); stopping "
                             f"without saving them. The last good checkpoint, if any, is intact: {last_path}")
        extra = method.state()  # on every rank: a method may gather per-rank state (SwAV's queues)
        parallel.save(path, model, trained, optimizer, {  # collective under --fsdp: every rank writes its shards
            "scaler": scaler.state_dict(), **extra, "rng": rng_before_val if pending_val else rng_state(),
            "step": step, "epoch": epoch, "batch_in_epoch": done_in_epoch, "total_steps": total_steps, "best": best,
            "config": record, "val": val, "pending_val": pending_val, "kept": kept,
            "schedule_changes": schedule_changes, "seen": seen_before + seen,
            "train_seconds": seconds_before + time.perf_counter() - start, "vitfast_version": vitfast.__version__})

    def keep_best(acc1):
        """checkpoint-step<S>.pt for each of the best --keep-checkpoints validations (timm's --checkpoint-hist)."""
        def path(s):
            return os.path.join(out, f"checkpoint-step{s}{parallel.suffix}")

        ranked = sorted(kept + [{"acc1": acc1, "step": step}], key=lambda k: (-k["acc1"], k["step"]))
        kept[:] = ranked[:cfg["keep_checkpoints"]]
        if any(k["step"] == step for k in kept):
            checkpoint(path(step))
        for k in ranked[cfg["keep_checkpoints"]:]:
            parallel.remove(path(k["step"]))

    def validate():
        nonlocal val, best, rng_before_val, val_step
        rng_before_val, val_step = rng_state(), step
        stop.safe = True  # no training state moves while validating: Ctrl-C can stop here at once
        val = method.validate(data.val_loader, device, amp_dtype, dist, desc="validation",
                              model=parallel.plain(method.reported))
        stop.safe = False
        log.log({"step": step, "epoch": epoch, **val}, kind="val")
        if val["acc1"] > best["acc1"]:
            best = {"acc1": val["acc1"], "step": step}
            checkpoint(best_path)
        if cfg["keep_checkpoints"] > 1:
            keep_best(val["acc1"])
        checkpoint(last_path)  # with each evaluation: a short epoch need not wait for a write

    # ---- train
    epochs = -(-total_steps // steps_per_epoch)
    length = "" if cfg["steps"] or cfg["epochs"] else ", the default length: no --epochs or --steps was given"
    log.print(f"{cfg['model']}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"{len(data.train_set)} training / {len(data.val_set)} validation images, {num_classes} classes, "
              f"{plural(total_steps, 'step')} of {cfg['batch_size']} ({plural(epochs, 'epoch')}{length}) on "
              f"{dist.world_size} x {device}{parallel.describe()}; output {out}")
    if device.type == "cpu" and cfg["amp"] == "bf16" and cpu_has_bf16() is False:
        log.print("note: this CPU has no bf16 arithmetic (AVX512-BF16 / AMX): --amp bf16 is emulated here and runs "
                  "several times slower than --amp none")
    own = {k: v for k, v in config_lib.from_model_defaults(cfg, origin).items()
           if not (cfg["ssl"] and k in config_lib.SUPERVISED_ONLY)}  # (not what a --ssl run reads)
    if own:
        settings = ", ".join(f"{config_lib.flag_of(k)} {config_lib.show(v)}" for k, v in own.items())
        owner = cfg["model"] + (f" and --ssl {cfg['ssl']}" if cfg["ssl"] else "")
        log.print(f"{owner}'s own defaults: {settings} (a flag or config key overrides each)")
    if warmup_steps:
        log.print(f"warmup: {plural(warmup_steps, 'step')}{warmup_note}, from lr {cfg['warmup_lr']:g}")
    elif warmup_note.startswith("none"):
        log.print(f"warmup: {warmup_note}")
    start, seen, stop_reason = time.perf_counter(), 0, None
    last_log = (start, 0)  # (time, images) at the previous log line: each line reports its interval's rate
    accum = cfg["grad_accum_steps"]
    first_step = step
    stop = StopRequest(enabled=not dist.enabled)  # torchrun's ranks would each stop at another step
    try:
        stop.install()
        if resume and state.get("pending_val"):
            validate()
        while step < total_steps and stop_reason is None:
            loader = data.epoch_batches(epoch, done_in_epoch)
            train_model.train()
            done = done_in_epoch // accum  # steps of this epoch already taken (a resumed run)
            log.epoch_bar(epoch, epochs, min(steps_per_epoch, done + total_steps - step), done)
            for x, y in loader:
                if done_in_epoch // accum >= steps_per_epoch or step >= total_steps:
                    break
                seen += len(y) * dist.world_size
                x, y = method.views(to_device(x, device), y.to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = method.loss(train_model, x, y, step)
                watch.update(loss, step)  # read at log steps and checkpoints: no wait for the GPU per step
                scaler.scale(loss / accum).backward()
                done_in_epoch += 1
                if done_in_epoch % accum:
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, warmup_steps, lr, cfg["warmup_lr"], cfg["min_lr"], cfg["sched"],
                                        cfg["decay_milestones"], cfg["decay_rate"])
                if cfg["clip_grad"]:
                    scaler.unscale_(optimizer)
                    parallel.clip_grad_norm_(trained.parameters(), cfg["clip_grad"])
                method.before_step(step, optimizer)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                method.after_step(step)
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
                if cfg["eval_every_steps"] and step % cfg["eval_every_steps"] == 0 and step < total_steps:
                    validate()
                    train_model.train()
            log.end_epoch()
            if stop.requested:
                checkpoint(last_path)
                stop.saved = True
                raise KeyboardInterrupt
            epoch_done = done_in_epoch // accum >= steps_per_epoch
            if epoch_done:
                epoch, done_in_epoch = epoch + 1, 0
            if ((epoch_done and epoch % cfg["eval_every"] == 0) or step >= total_steps or stop_reason) and \
                    val_step != step:  # not twice at one step (--eval-every-steps)
                validate()
    except BaseException as e:
        stop.quiet()  # on the way out: a further Ctrl-C would only break the cleanup
        validating = stop.safe
        log.end_epoch()
        interrupted = isinstance(e, KeyboardInterrupt) and stop.requested
        if interrupted and stop.at_boundary:  # Ctrl-C while validating: the resumed run validates first
            checkpoint(last_path, pending_val=True)
            stop.saved = True
        log.close()
        # a new run with nothing to continue from leaves no half-made run (a NaN stop keeps its metrics)
        if dist.is_main and not resume and not os.path.exists(last_path) and not isinstance(e, SystemExit):
            discard_failed_start(out, created)
            if interrupted:
                say(f"stopped at step {step} of {total_steps} before any checkpoint was written (Ctrl-C twice); "
                    f"{out} is removed: the same command starts the run again")
        elif interrupted:
            saved = (f"{last_path} holds it" if stop.saved else
                     f"not saved (Ctrl-C twice): {last_path} holds step {read_step(last_path)}")
            say(f"stopped at step {step} of {total_steps}; {saved}. Continue with: python -m vitfast.train "
                f"--output {out} --resume auto")
        lost = dist.lost_rank(e)
        if lost:  # another rank died or hangs: this one cannot go on
            raise SystemExit(f"vitfast.train: rank {dist.rank} stops at step {step}: a collective failed ({lost}); "
                             f"another rank died or hung. {last_path} holds step {read_step(last_path)}: continue "
                             "with the same command and --resume auto") from e
        if isinstance(e, UnreadableImagesError):  # the data, not vitfast: one line, like a missing dataset
            raise UsageError(f"--data {cfg['data']}: {one_line(e)}") from e
        if is_out_of_memory(e):
            raise UsageError(oom_in_training(cfg, validating, micro, device)) from e
        raise
    finally:
        stop.restore()
    check_loss()
    # ---- outputs: summary.json last, so that it marks a finished run; a stop before it is finished on resume
    outputs = StopRequest(enabled=not dist.enabled)
    outputs.safe = True  # training is done and saved: Ctrl-C stops at once
    try:
        outputs.install()
        totals = dict(steps=step, stopped=stop_reason, seen=seen_before + seen,
                      train_seconds=seconds_before + time.perf_counter() - start)
        summary = write_outputs(cfg, record, out, method, parallel.plain(method.reported), val, data.val_loader,
                                device, amp_dtype, dist, log, best, totals)
    except BaseException as e:
        outputs.quiet()
        log.close()
        if isinstance(e, KeyboardInterrupt):
            say(f"stopped while writing the run's outputs; its training is done and saved in {last_path}. Write "
                f"them with: python -m vitfast.train --output {out} --resume auto")
        if is_out_of_memory(e):
            raise UsageError(f"out of memory evaluating the trained model on {device} at "
                             f"{cfg['eval_batch_size'] or micro} images per batch (its training is done and saved): "
                             f"--resume auto --eval-batch-size N with a lower N writes its outputs") from e
        raise
    finally:
        outputs.restore()
    log.close()
    parallel.close()
    dist.close()
    return summary


def write_outputs(cfg, record, out, method, final, val, val_loader, device, amp_dtype, dist, log, best, totals):
    """The finished run's outputs: its final validation (unless the loop's last one is on hand), the PTQ
    table, model.safetensors, then summary.json; the summary. final: the method's reported module, whole."""
    if val is None:
        val = method.validate(val_loader, device, amp_dtype, dist, desc="validation", model=final)
    seconds = totals["train_seconds"]
    summary = {"val_acc1": val["acc1"], "val_acc5": val["acc5"], "val_loss": val["loss"],
               "images_per_second": totals["seen"] / max(seconds, 1e-9), "train_seconds": seconds,
               "steps": totals["steps"], "best_acc1": best["acc1"], "stopped": totals["stopped"]}
    if "exit_acc1" in val:
        summary["val_exit_acc1"] = val["exit_acc1"]
    if cfg["ptq_report"]:
        summary["ptq"] = ptq_report(method, final, cfg["ptq_report"], val_loader, device, dist, log, val, cfg["quant"])
    if dist.is_main:
        save_checkpoint(final, os.path.join(out, "model.safetensors"), config=record,
                        weights=method.weights)
        from vitfast.models.checkpoint import atomic_write

        atomic_write(os.path.join(out, "summary.json"),
                     lambda tmp: open(tmp, "w").write(json.dumps(summary, indent=2)))
        log.print(json.dumps({k: v for k, v in summary.items() if k != "ptq"}))
        steps = [("curves", f"tensorboard --logdir {out}"), *method.next_steps(out)]
        log.print(f"\ndone: {out}  (best {method.scored} {best['acc1']:.2f}% at step {best.get('step')}; "
                  "summary.json, checkpoints, model.safetensors)\n" +
                  "\n".join(f"  {label + ':':<11}{command}" for label, command in steps))
    return summary


def lengthen(cfg, state, run_dir, out, resume):
    """--extend-epochs / --extend-steps on a resumed run: its length in cfg made longer, and
    {"flag", "by"} to record; None without them. A finished run is never overwritten: lengthening one
    continues it into a new --output."""
    key = "extend_epochs" if cfg["extend_epochs"] else "extend_steps" if cfg["extend_steps"] else None
    if key is None:
        return None
    flag, by = config_lib.flag_of(key), cfg[key]
    unit = "steps" if cfg["steps"] else "epochs"
    if key != f"extend_{unit}":
        raise UsageError(f"{flag} {by}: the run's length is in {unit} (--{unit}); lengthen it with --extend-{unit}")
    if finished(run_dir, state) and os.path.abspath(out) == run_dir:
        raise UsageError(f"{flag} {by}: {run_dir} is a finished run, and a finished run is never overwritten: "
                         f"continue it into a new folder with --resume {resume} --output NEW_FOLDER {flag} {by}")
    cfg[unit] = (cfg[unit] or 300) + by  # (an epochs run without --epochs had the default 300)
    cfg[key] = None  # applied once: a later resume of the longer run must not lengthen it again
    return {"flag": flag, "by": by}


def finished(out, state):
    """A checkpoint at the run's last step whose outputs are written (summary.json, the last of them, of
    this step: a --max-time stop writes one too) and that was not saved in the middle of a validation."""
    try:
        with open(os.path.join(out, "summary.json")) as f:
            steps = json.load(f).get("steps")
    except (OSError, ValueError):
        return False
    return steps == state["step"] and not state.get("pending_val")


def finished_run(out, state, say, dist):
    """A resumed run that has nothing left to do: said so, and not one of its files is touched."""
    summary_path = os.path.join(out, "summary.json")
    last = last_checkpoint(out) or os.path.join(out, "checkpoint-last.pt")
    say(f"{out}: the run is finished (step {state['step']} of {state['total_steps']}); nothing to do. Its results: "
        f"{summary_path}. To train on from its weights, start a new run: --init-checkpoint {last} --output NEW_FOLDER")
    dist.close()
    with open(summary_path) as f:
        return json.load(f)


def ptq_report(method, final, formats, loader, device, dist, log, fp32, qat=None):
    """Post-training quantization of the trained model into each format, evaluated side by side (scaled
    formats such as INT8 with dynamic activation scales; vitfast.eval --calib-steps calibrates static ones).
    final: the method's reported model, whole; fp32: its validation as trained, in its QAT format `qat` if any."""
    from vitfast.quant import convert_ptq, parse_recipe

    rows = {}
    if qat:  # the validated model computes in its QAT format; fp32 is the same weights without the rounding
        rows[f"{qat.lower()} (qat)"] = {"acc1": fp32["acc1"], "acc5": fp32["acc5"]}
        formats = ["fp32"] + [f for f in formats if f.lower() != "fp32"]
    else:
        rows["fp32"] = {"acc1": fp32["acc1"], "acc5": fp32["acc5"]}
    for fmt in formats:
        res = method.validate(loader, device, None, dist, desc=f"PTQ {fmt}",
                              model=convert_ptq(final, parse_recipe(fmt)))
        rows[fmt.lower()] = {"acc1": res["acc1"], "acc5": res["acc5"]}
    log.print("\npost-training quantization of the trained model (validation split):")
    w = max(10, *(len(f) + 2 for f in rows))
    log.print(f"{'format':<{w}}{'top-1 %':>9}{'top-5 %':>9}")
    for fmt, r in rows.items():
        log.print(f"{fmt:<{w}}{r['acc1']:>9.2f}{r['acc5']:>9.2f}")
    return rows


def plan_warmup(cfg, origin, where, steps_per_epoch, total_steps):
    """(warmup steps, what the header says of them). A warmup the user set at or past the run's length is
    refused; a model's default one (meant for its default length) is dropped, and the header says so."""
    steps = warmup_length(cfg["warmup_epochs"], cfg["warmup_steps"], steps_per_epoch)
    key = "warmup_steps" if cfg["warmup_steps"] is not None else "warmup_epochs"
    note = "" if key == "warmup_steps" else f" ({cfg['warmup_epochs']:g} epochs of {plural(steps_per_epoch, 'step')})"
    if steps < total_steps:
        return steps, note
    in_steps = "" if key == "warmup_steps" else f" (= {plural(steps, 'step')})"
    too_long = f"{cfg[key]:g}{in_steps} is at or past the run's {plural(total_steps, 'step')}"
    if key in origin:
        raise UsageError(f"{where(key)} {too_long}: give a shorter warmup, or {config_lib.flag_of(key)} 0 for none")
    owner = cfg["model"] if key in config_lib.MODEL_DEFAULTS.get(cfg["model"], {}) else \
        f"--ssl {cfg['ssl']}" if key in config_lib.METHOD_DEFAULTS.get(cfg["ssl"], {}) else "the"
    return 0, f"none: {owner}'s default {config_lib.flag_of(key)} {too_long}".replace("the's", "the")


def oom_in_training(cfg, validating, micro, device):
    """The one line for running out of memory in the training loop: the batch that did, and the way out."""
    if validating:
        return (f"out of memory validating on {device} at {cfg['eval_batch_size'] or micro} images per batch: lower "
                f"--eval-batch-size")
    accum = "" if cfg["grad_accum_steps"] == 1 else f" in {cfg['grad_accum_steps']} micro-batches"
    return (f"out of memory training on {device} at --batch-size {cfg['batch_size']}{accum} ({micro} images per "
            f"forward and backward): lower --batch-size, or keep it and split each step with --grad-accum-steps N "
            f"(--grad-checkpointing also takes less)")


def read_step(path):
    """The step a training checkpoint holds ('none' when there is no readable one)."""
    try:
        return load_state(path)["step"]
    except Exception:  # no file, or one cut short: the message says so rather than failing
        return "none"


def cpu_has_bf16():
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16); None: cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def plural(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


if __name__ == "__main__":
    run("vitfast.train", main)
