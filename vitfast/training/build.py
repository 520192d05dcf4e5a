"""The model a run trains: the one its configuration names, initialised from --init-checkpoint for a new
run, with activation checkpointing and QAT when asked, on the run's device."""
import vitfast

from ..cli import UsageError, blame, one_line
from ..layers import set_grad_checkpointing
from ..models import CheckpointMismatchError, load_for_finetune
from . import config as config_lib

__all__ = ["build_model"]


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
