"""Every option of a training run: the components it is configured by, in --help's order, each option's
record, their defaults, and the layer of the model's, the method's and the data's own defaults."""
import dataclasses

from .data import BUILTIN_SSL, BUILTIN_SSL_CROPS, AugmentOptions, DataOptions
from .model import MODEL_DEFAULTS, ModelOptions
from .optimization import OptimOptions, PrecisionOptions, ScheduleOptions
from .run import ParallelOptions, RunOptions


def components():
    """The component dataclasses, each registered self-supervised method's options among them."""
    from ..methods import SSL_METHODS, DistillOptions, SSLOptions  # (the methods import this package's parts)

    methods = [m.Options for m in SSL_METHODS.values() if m.Options is not None]
    return [ModelOptions, DataOptions, AugmentOptions, OptimOptions, ScheduleOptions, PrecisionOptions,
            DistillOptions, SSLOptions, *methods, RunOptions, ParallelOptions]


def options():
    """{key: Option} of every option; a method's own need --ssl NAME unless they say otherwise."""
    from ..methods import SSL_METHODS

    needs = {m.Options: (f"--ssl {name}", lambda c, name=name: c["ssl"] == name)
             for name, m in SSL_METHODS.items() if m.Options is not None}
    out, owner = {}, {}
    for component in components():
        for o in component.options():
            if o.key in out:
                raise ValueError(f"option {o.key!r}: of {owner[o.key].__name__} and of {component.__name__}")
            out[o.key], owner[o.key] = dataclasses.replace(o, needs=o.needs or needs.get(component)), component
    return out


def method_defaults(ssl):
    """The defaults of the self-supervised method `ssl` names (none for supervised training)."""
    from ..methods import SSL_METHODS

    return dict(SSL_METHODS[ssl].defaults) if ssl in SSL_METHODS else {}


def data_defaults(config, origin):
    """The built-in data's own defaults for a self-supervised run: its crops' colour always, their number and
    scales where the run (a file or flag, in origin) names none of its crops (nor their total, VISSL's)."""
    if not config.get("ssl") or str(config["data"]).lower() != "builtin":
        return {}
    named = any(key in origin for key in ("num_crops", "size_crops", "crop_scales", "total_num_crops"))
    return {**BUILTIN_SSL, **({} if named else BUILTIN_SSL_CROPS)}


def own_defaults(config, origin):
    """The defaults layer of the model, method and data a config names: the model's (MODEL_DEFAULTS, a
    supervised recipe) under the method's: the optimisation recipe is the method's (DINO's learning rate is
    a quarter of vit_pico's supervised one); the data's crops over the method's."""
    return {**MODEL_DEFAULTS.get(config["model"], {}), **method_defaults(config.get("ssl")),
            **data_defaults(config, origin)}


def from_model_defaults(config, origin):
    """{key: value} of the config that the model's, method's or data's own defaults set (no file or flag gave
    them)."""
    return {k: v for k, v in own_defaults(config, origin).items() if k not in origin and config[k] == v}
