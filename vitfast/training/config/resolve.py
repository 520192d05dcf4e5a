"""The training configuration resolved from the command line: one grouped argparse parser whose flags
(timm-style kebab-case) are made from the components' fields, their defaults under the model's and the
method's own, a YAML/JSON file's (-c) over those, flags over files and `--set key.sub=value` over all.
Unknown keys or flags are errors that name the nearest valid one; the resolved config is a flat dict,
saved as config.yaml."""
import sys

import yaml

from ...cli import ArgumentParser, UsageError
from ..importers import NEEDS
from ..importers.vissl import OVERRIDE, VISSL
from .command_line import add_flags, default_note, parse_flags, refuse_unneeded
from .flags import flag_of, show, unknown_flag, unknown_key
from .kinds import check_value, coerce, load_yaml, parse_text
from .model import MODEL_DEFAULTS
from .options import components, options, own_defaults
from .optimization import ScheduleOptions

_EXCLUSIVE = ScheduleOptions.EXCLUSIVE


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


def build_parser(keys=None):
    parser = ArgumentParser(prog="python -m vitfast.train",
                            description="Train a vitfast model. With no arguments: vit_pico_patch4_32 on the "
                                        "built-in dataset for 4 epochs, then a post-training quantization table. "
                                        "A model may bring its own defaults (shown with each flag); config files, "
                                        "flags and --set override them.")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="YAML/JSON config file or packaged config name; sets defaults (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key (dots allowed: model_kwargs.depth=6)")
    keys = keys or options()
    model = keys["model"].default

    def note(o):  # the default model's own, what a plain run uses first
        if o.key in MODEL_DEFAULTS[model]:
            return f" (default: {show(MODEL_DEFAULTS[model][o.key])} for {model}, {show(o.shown or o.default)} " \
                   "for other models)"
        return default_note(o)

    return add_flags(parser, keys.values(), note)


def _layers(args, files, model_defaults, keys):
    """(config, origin) from the parsed arguments: defaults < model_defaults < files < flags < --set."""
    config, origin = {key: o.default for key, o in keys.items()}, {}
    if model_defaults:
        _layer(config, origin, model_defaults, None, keys)
    for name, data in files:
        _layer(config, origin, data, lambda key, name=name: f"config {name!r}, key {key}", keys)
    flags = parse_flags(args, keys.values())
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
    keys = options()  # (the registered methods' options among them)
    parser = build_parser(keys)
    argv = list(argv if argv is not None else sys.argv[1:])
    overrides = [a for a in argv if OVERRIDE.match(a)]  # VISSL's, for a VISSL file
    args, unknown = parser.parse_known_args([a for a in argv if a not in overrides])
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}{unknown_flag(unknown[0], parser.flags())}")
    files, needs = _read_files(args.config, overrides, keys)
    config, origin = _layers(args, files, None, keys)
    own = own_defaults(config, origin)
    if own:
        config, origin = _layers(args, files, own, keys)
    for key, (name, why) in needs.items():
        if key not in origin:  # no flag, --set or other file gave it
            raise UsageError(f"config {name!r}: {why}; give {flag_of(key)}")
    if origins is not None:
        origins.update(origin)
    return check_config(config, origin, keys)


def _read_files(names, overrides, keys):
    """[(name, its typed keys)] of the -c files, and {key: (file, why)} of what a VISSL or myrtle-vision file
    asks that a flag must replace; overrides: VISSL's config.KEY=value arguments, applied to every VISSL file."""
    from .files import read_config_file

    files, needs, vissl = [], {}, False
    for name in names:
        data = read_config_file(name, overrides)
        vissl = data.pop(VISSL, False) or vissl
        needs.update({key: (name, why) for key, why in data.pop(NEEDS, {}).items()})
        files.append((name, typed(data, f"config {name!r}", keys)))
    if overrides and not vissl:
        raise UsageError(f"unknown argument {overrides[0]!r}: VISSL's override of a VISSL file's key, and no -c "
                         "file is one (vitfast's own: --set key=value)")
    return files, needs


def check_config(config, origin, keys=None):
    """What one value alone cannot tell: an option asked for on the command line whose only effect is
    through another that is absent (a recipe file may carry settings for its variants), then each
    component's check. origin: key -> where it was set (only keys the user set)."""
    def where(key):
        return origin.get(key, flag_of(key))

    asked = {key for key, source in origin.items() if source.startswith("--")}
    refuse_unneeded((keys or options()).values(), config, asked, where)
    for component in components():
        component.of(config).check(config, where)
    return config
