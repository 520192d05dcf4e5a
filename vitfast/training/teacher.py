"""The distillation teacher (DeiT): a vitfast checkpoint or model.safetensors, rebuilt from what the file
records (model, image size, model kwargs, class count), or a torchvision / timm model by name with its
weights from --teacher-checkpoint. A teacher with random weights is refused unless asked for."""
import os

from ..cli import UsageError, blame
from ..models import load_checkpoint
from .state import model_from_file

__all__ = ["build_teacher"]

_FILE_ERRORS = (ValueError, TypeError, OSError, RuntimeError)  # CheckpointMismatchError is a RuntimeError


def build_teacher(cfg, num_classes, img_size, device):
    """(the teacher in eval mode without gradients, checked against the student's classes and input size;
    which weights of a vitfast run's file it holds, None for other weights)."""
    name, path, weights = cfg["teacher"], cfg["teacher_checkpoint"], cfg["teacher_weights"]
    which = None
    if os.path.isfile(name):
        if path:
            raise UsageError(f"--teacher-checkpoint has no effect with --teacher {name} (a file: it holds the weights)")
        teacher, info = model_from_file(name, "--teacher", weights)
        which = info["weights"]
        kwargs = info["model_kwargs"]
        classes = kwargs.get("num_classes", teacher.default_cfg.get("num_classes"))
        size = teacher.default_cfg["input_size"][-1]
        if classes != num_classes:
            raise UsageError(f"--teacher {name}: the teacher predicts {classes} classes, the dataset has {num_classes}")
        if size != img_size:
            raise UsageError(f"--teacher {name}: the teacher ({info['architecture']}) takes {size}x{size} images, the "
                             f"student is trained on {img_size}x{img_size}; train the student at {size} (--img-size) "
                             "or use a teacher of the student's size")
    else:
        if not path and not cfg["teacher_random_init"]:
            raise UsageError(f"--teacher {name} has no weights: give --teacher-checkpoint FILE (vitfast downloads "
                             "nothing), or --teacher-random-init to distil from random weights on purpose")
        teacher = _by_name(name, num_classes)
        if path:
            with blame("--teacher-checkpoint", _FILE_ERRORS):
                which = load_checkpoint(teacher, path, weights=weights).weights
        _try_one_image(teacher, name, img_size)
    return teacher.to(device).eval().requires_grad_(False), which


def _try_one_image(teacher, name, img_size):
    """A model by name says nothing of the input size it takes: one image at the student's size tells,
    here, rather than a shape error at the first training step."""
    import torch

    try:
        with torch.no_grad():
            teacher.eval()(torch.zeros(1, 3, img_size, img_size))
    except (RuntimeError, ValueError, AssertionError) as e:
        raise UsageError(f"--teacher {name} cannot take the student's {img_size}x{img_size} images ({e})") from e


def _by_name(name, num_classes):
    import torchvision

    try:
        return torchvision.models.get_model(name, num_classes=num_classes)
    except ValueError:
        pass
    try:
        import timm
    except ImportError:
        raise UsageError(f"--teacher {name!r} is neither a file nor a torchvision model name (timm, which has more, "
                         "is not installed)") from None
    if not timm.is_model(name):
        raise UsageError(f"--teacher {name!r} is neither a file nor a torchvision or timm model name")
    return timm.create_model(name, num_classes=num_classes)
