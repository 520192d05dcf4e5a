"""A finished run's outputs: its final validation, the post-training quantization table, model.safetensors
and summary.json, written last so that it marks the run finished."""
import json
import os

from ..models import save_checkpoint
from ..files import atomic_write
from .optim import AMP_DTYPES

__all__ = ["write_outputs", "ptq_report"]


def write_outputs(cfg, record, out, method, final, state, stopped, val_loader, dist, log):
    """The finished run's outputs: its final validation (unless the loop's last one is on hand), the PTQ
    table, model.safetensors, then summary.json; the summary. final: the method's reported module, whole;
    state: the run's TrainState; stopped: why the loop stopped before the schedule's end (None: it did not)."""
    val, best, seconds = state.val, state.best, state.train_seconds
    if val is None:
        val = method.validate(val_loader, dist.device, AMP_DTYPES[cfg["amp"]], dist, desc="validation", model=final)
    summary = {"val_acc1": val["acc1"], "val_acc5": val["acc5"], "val_loss": val["loss"],
               "images_per_second": state.seen_total / max(seconds, 1e-9), "train_seconds": seconds,
               "steps": state.step, "best_acc1": best["acc1"], "stopped": stopped}
    if "exit_acc1" in val:
        summary["val_exit_acc1"] = val["exit_acc1"]
    if cfg["ptq_report"]:
        summary["ptq"] = ptq_report(method, final, cfg["ptq_report"], val_loader, dist.device, dist, log, val,
                                    cfg["quant"])
    if dist.is_main:
        save_checkpoint(final, os.path.join(out, "model.safetensors"), config=record,
                        weights=method.weights)
        atomic_write(os.path.join(out, "summary.json"),
                     lambda tmp: open(tmp, "w").write(json.dumps(summary, indent=2)))
        log.print(json.dumps({k: v for k, v in summary.items() if k != "ptq"}))
        steps = [("curves", f"tensorboard --logdir {out}"), *method.next_steps(out)]
        log.print(f"\ndone: {out}  (best {method.scored} {best['acc1']:.2f}% at step {best.get('step')}; "
                  "summary.json, checkpoints, model.safetensors)\n" +
                  "\n".join(f"  {label + ':':<11}{command}" for label, command in steps))
    return summary


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
