"""Which implementation runs attention (and, as kernels land, MLP and norms): one switch per model.

"eager": explicit softmax(q kᵀ) v in PyTorch (the reference, and the path that returns attention maps);
"sdpa": torch.nn.functional.scaled_dot_product_attention; "vitfast": vitfast's fused kernels, falling
back per operation to SDPA (and saying so once) where a kernel is missing for the input at hand."""
import contextlib
import warnings

BACKENDS = ("eager", "sdpa", "vitfast")
_default = "sdpa"
_warned = set()


def check_backend(name, argument="backend"):
    if name not in BACKENDS:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def set_backend(name):
    """Set the backend of every model whose modules have none of their own (default "sdpa")."""
    global _default
    _default = check_backend(name)


def get_backend():
    return _default


@contextlib.contextmanager
def use_backend(name):
    """Temporarily set the global backend."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_model_backend(model, name):
    """Pin `name` on every module of `model` that has a backend (None: follow the global one)."""
    if name is not None:
        check_backend(name)
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = name
    return model


def resolve(module_backend):
    return module_backend if module_backend is not None else _default


def fallback_once(op, reason):
    """Warn once per (op, reason) that the vitfast backend is using a substitute."""
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(f"vitfast backend: {op} falls back to SDPA/eager ({reason})", stacklevel=3)
