"""The training configuration resolved from the command line: one grouped argparse parser whose flags
(timm-style kebab-case) are made from the components' fields, their defaults under the model's and the
method's own, a YAML/JSON file's (-c) over those, flags over files and `--set key.sub=value` over all.
Unknown keys or flags are errors that name the nearest valid one; the resolved config is a flat dict,
saved as config.yaml."""
import yaml

from ...cli import ArgumentParser, UsageError
from .flags import flag_of, show, unknown_flag, unknown_key
from .kinds import check_value, coerce, load_yaml, parse_text
from .model import MODEL_DEFAULTS
from .options import components, defaults, options, own_defaults
from .optimization import ScheduleOptions

_EXCLUSIVE = ScheduleOptions.EXCLUSIVE
_METAVARS = {int: "N", float: "X", "floats": "X,Y", "ints": "N,M", "pairs": "LO,HI,...", "strs": "A,B",
             "kv": "K=V,..."}


def parse_value(key, text, where=None, keys=None):
    """A command-line / --set string -> the option's type (lists comma-separated; "none" is null for an
    option whose default is None)."""
    o = (keys or options())[key]
    return parse_text(o.kind, o.default is None, text, where or flag_of(key))


def typed(data, source, keys=None):
    """A config file's {key: value}, each key known and each value of its option's type."""
    keys = keys or options()
    out = {}
    for key, value in data.items():
        if key not in keys:
            raise UsageError(f"{source}: unknown key {key!r}{unknown_key(key, keys)}")
        out[key] = coerce(keys[key].kind, value, keys[key].default is None, f"{source}, key {key}")
    return out


def _layer(config, origin, updates, where, keys):
    """Apply updates; origin records where each key the user set came from (where=None: a default)."""
    for key, value in updates.items():
        if key in _EXCLUSIVE and value is not None:
            config[_EXCLUSIVE[key]] = None
            origin.pop(_EXCLUSIVE[key], None)
        config[key] = value
        if where is not None:
            origin[key] = where(key) if callable(where) else where
        check_value(key, value, keys[key].check, origin.get(key, flag_of(key)))


def build_parser():
    parser = ArgumentParser(prog="python -m vitfast.train",
                            description="Train a vitfast model. With no arguments: vit_pico_patch4_32 on the "
                                        "built-in dataset for 4 epochs, then a post-training quantization table. "
                                        "A model may bring its own defaults (shown with each flag); config files, "
                                        "flags and --set override them.")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="YAML/JSON config file or packaged config name; sets defaults (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (dots allowed: model_kwargs.depth=6)")
    groups, model = {}, options()["model"].default
    for o in options().values():
        g = groups.setdefault(o.group, parser.add_argument_group(o.group))
        help_text = o.help.replace("{choices}", " | ".join(o.check)) if "{choices}" in o.help else o.help
        if o.kind is bool:
            g.add_argument(o.flag, nargs="?", const="true", default=None, metavar="true|false", help=help_text)
            continue
        shown = show(o.shown or o.default)
        if o.key in MODEL_DEFAULTS[model]:  # what a plain run uses first
            suffix = f" (default: {show(MODEL_DEFAULTS[model][o.key])} for {model}, {shown} for other models)"
        else:
            suffix = "" if shown in ("None", "{}") or "default" in help_text else f" (default: {shown})"
        g.add_argument(o.flag, default=None, metavar=_METAVARS.get(o.kind, None), help=help_text + suffix)
    return parser


def _layers(args, files, model_defaults, keys):
    """(config, origin) from the parsed arguments: defaults < model_defaults < files < flags < --set."""
    config, origin = defaults(), {}
    if model_defaults:
        _layer(config, origin, model_defaults, None, keys)
    for name, data in files:
        _layer(config, origin, data, lambda key, name=name: f"config {name!r}, key {key}", keys)
    flags = {key: parse_value(key, getattr(args, key), keys=keys) for key in keys if getattr(args, key) is not None}
    for key, other in _EXCLUSIVE.items():
        if key in flags and other in flags:
            raise UsageError(f"give {flag_of(key)} or {flag_of(other)}, not both")
    _layer(config, origin, flags, flag_of, keys)
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        dotted, value = item.split("=", 1)
        key, *sub = dotted.strip().split(".")
        if key not in keys:
            raise UsageError(f"--set: unknown key {key!r}{unknown_key(key, keys)}")
        where = f"--set {dotted.strip()}"
        if sub:
            if not isinstance(config.get(key), dict):
                raise UsageError(f"--set: {key!r} has no sub-keys")
            try:
                sub_value = load_yaml(value)
            except yaml.YAMLError:
                raise UsageError(f"{where}: cannot read {value!r}") from None
            _layer(config, origin, {key: {**config[key], ".".join(sub): sub_value}}, where, keys)
        else:
            _layer(config, origin, {key: parse_value(key, value, where, keys)}, where, keys)
    return config, origin


def resolve(argv=None, origins=None):
    """argv -> the resolved flat config dict: defaults < the model's and the method's own defaults (for the
    model and method the layers above choose) < config files < flags < --set. origins, a dict if given,
    receives key -> where the user set it ("--lr", "config 'x.yaml', key lr"), for messages."""
    from .files import read_config_file

    parser, keys = build_parser(), options()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}{unknown_flag(unknown[0], parser.flags())}")
    files = [(name, typed(read_config_file(name), f"config {name!r}", keys)) for name in args.config]
    config, origin = _layers(args, files, None, keys)
    own = own_defaults(config)
    if own:
        config, origin = _layers(args, files, own, keys)
    if origins is not None:
        origins.update(origin)
    return check_config(config, origin)


def check_config(config, origin):
    """What one value alone cannot tell: an option asked for on the command line whose only effect is
    through another that is absent (a recipe file may carry settings for its variants), then each
    component's check. origin: key -> where it was set (only keys the user set)."""
    def where(key):
        return origin.get(key, flag_of(key))

    for key, o in options().items():
        if o.needs and origin.get(key, "").startswith("--") and config[key] not in (None, False):
            what, present = o.needs
            if not present(config):
                raise UsageError(f"{where(key)} has no effect without {what() if callable(what) else what}; "
                                 "remove it or add what it needs")
    for component in components():
        component.of(config).check(config, where)
    return config
