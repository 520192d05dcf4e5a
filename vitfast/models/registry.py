"""The model registry: register_model, create_model, list_models (timm's interface)."""
import difflib
import fnmatch
import inspect

from ..layers.backend import set_model_backend

_entrypoints = {}  # name -> function(**overrides) -> model
_configs = {}  # name -> default config (input size, normalisation, crop)
# files that hold a whole model rather than its weights: (recognise(path), build(path, architecture=,
# create_kwargs=)), registered by the package that writes them (vitfast.quant's 8-bit files), which
# builds on this one
_model_files = []

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def model_config(input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.9, num_classes=1000, **extra):
    return dict(input_size=(3, input_size, input_size), mean=mean, std=std, crop_pct=crop_pct,
                num_classes=num_classes, **extra)


def register_model(fn=None, *, config=None):
    """Decorator: registers fn under its name with its default config (model_config() when None)."""
    def wrap(f):
        if f.__name__ in _entrypoints:
            raise ValueError(f"model {f.__name__!r} is registered twice")
        _entrypoints[f.__name__] = f
        _configs[f.__name__] = config or model_config()
        return f

    return wrap(fn) if fn is not None else wrap


def register_model_file(recognise, build):
    """create_model(name, checkpoint_path=path) returns build(path, architecture=name, create_kwargs=overrides)
    for a path where recognise(path) is true, in place of loading weights into a new model."""
    _model_files.append((recognise, build))


def register_variant(name, cls, defaults, config, doc):
    """Register `name` as cls(**defaults, **overrides) (overrides validated by build) with its default
    config and docstring; returns the entry point."""
    def entry(**overrides):
        return build(cls, name, defaults, overrides)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    register_model(entry, config=config)
    return entry


def build(cls, name, defaults, overrides):
    """cls(**defaults, **overrides), refusing any override cls does not take (instead of ignoring it)."""
    accepted = []
    for klass in cls.__mro__:  # a subclass taking **kwargs passes them on to its parent
        params = inspect.signature(klass.__init__).parameters.values()
        accepted += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                     and p.name not in accepted]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        hints = {k: difflib.get_close_matches(k, accepted, 1) for k in unknown}
        msg = "; ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ValueError(f"model {name!r} does not take the override {msg}. It takes: {', '.join(accepted)}")
    return cls(**{**defaults, **overrides})


def list_models(pattern="*"):
    """Registered names matching a shell-style pattern (or any of a list of them), sorted."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in _entrypoints if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def get_model_config(name):
    _check_name(name)
    return dict(_configs[name])


def _check_name(name):
    if name not in _entrypoints:
        close = difflib.get_close_matches(name, list(_entrypoints), n=5, cutoff=0.5)
        raise ValueError(f"unknown model {name!r}" + (f"; closest: {', '.join(close)}" if close else "") +
                         " (vitfast.list_models() lists them all)")


def create_model(name, pretrained=False, checkpoint_path=None, backend=None, strict=True, **overrides):
    """Build a registered model. overrides go to the model's constructor (img_size, num_classes,
    drop_path_rate, ...); backend ("eager" | "sdpa" | "vitfast") pins its attention implementation;
    checkpoint_path loads a timm / official / Google .npz / safetensors checkpoint, or rebuilds an 8-bit
    model written by vitfast.quant.save_quantized (without its fp32 weights; a file of another model is
    an error)."""
    _check_name(name)
    if pretrained:
        raise ValueError("vitfast downloads no weights: pass checkpoint_path=FILE (a timm or official .pth, "
                         "a Google .npz or a .safetensors file) instead of pretrained=True")
    if checkpoint_path is not None:
        for recognise, build_from in _model_files:
            if recognise(checkpoint_path):  # e.g. an 8-bit model: rebuilt as such, without fp32 weights
                model = build_from(checkpoint_path, architecture=name, create_kwargs=overrides)
                if backend is not None:
                    set_model_backend(model, backend)
                return model
    model = _entrypoints[name](**overrides)
    model.default_cfg = model.pretrained_cfg = {**_configs[name], "architecture": name}
    model.create_kwargs = dict(overrides)  # with the architecture: what rebuilds it (save_checkpoint records both)
    if "num_classes" in overrides:
        model.default_cfg["num_classes"] = overrides["num_classes"]
    if "img_size" in overrides:
        size = overrides["img_size"]
        model.default_cfg["input_size"] = (3, size, size) if isinstance(size, int) else (3, *size)
    if backend is not None:
        set_model_backend(model, backend)
    if checkpoint_path is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint_path, strict=strict)
    return model
