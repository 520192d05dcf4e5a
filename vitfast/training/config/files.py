"""Config files: reading one (a path or a packaged recipe; VISSL's and myrtle-vision's formats through
their importers), and the config as a run records it (config.yaml, checkpoints) and reads it back."""
import json
import os
from importlib import resources

import yaml

from ...cli import UsageError, nearest, one_line
from .kinds import load_yaml


def packaged_configs():
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("vitfast.configs").iterdir()
                  if p.name.endswith((".yaml", ".json")))


def read_config_file(name, vissl_overrides=()):
    """A config file path, or the name of a config shipped in vitfast/configs. vissl_overrides: VISSL's
    config.KEY=value arguments, applied to a VISSL file (importers/vissl.py)."""
    if os.path.isfile(name):
        try:
            with open(name) as f:
                data = json.load(f) if name.endswith(".json") else load_yaml(f)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
            raise UsageError(f"-c/--config {name!r} cannot be read as {'JSON' if name.endswith('.json') else 'YAML'}: "
                             f"{one_line(e)}") from None
    else:
        for ext in (".yaml", ".json"):
            res = resources.files("vitfast.configs") / f"{name}{ext}"
            if res.is_file():
                data = load_yaml(res.read_text())
                break
        else:
            raise UsageError(f"-c/--config: {name!r} is neither a file nor a packaged config; packaged: "
                             f"{', '.join(packaged_configs())}{nearest(name, packaged_configs())}")
    if not isinstance(data, dict):
        raise UsageError(f"config {name!r} must hold a mapping of keys to values")
    from ..importers.myrtle import is_myrtle_config, translate_myrtle
    from ..importers.vissl import is_vissl_config, translate_vissl

    if is_myrtle_config(data):
        data = translate_myrtle(data, os.path.dirname(os.path.abspath(name)), source=f"myrtle config {name!r}")
    elif is_vissl_config(data):
        data = translate_vissl(data, source=f"VISSL config {name!r}", overrides=vissl_overrides)
    return data


def recorded(config):
    """The config as a run records it (config.yaml, checkpoints, model.safetensors): every path absolute, so
    that eval, --teacher and --resume read the same files from any working directory."""
    out = dict(config)
    kind, sep, root = str(out["data"]).partition(":")
    if sep and root:
        out["data"] = f"{kind}:{os.path.abspath(os.path.expanduser(root))}"
    for key in ("init_checkpoint", "teacher_checkpoint", "output"):
        if out.get(key):
            out[key] = os.path.abspath(os.path.expanduser(out[key]))
    if out.get("teacher") and os.path.isfile(out["teacher"]):  # a file, not a model name
        out["teacher"] = os.path.abspath(out["teacher"])
    return out


def upgraded(saved):
    """A run's config as written by an earlier release, in today's keys: its warmup ("warmup": epochs under
    epochs, steps under steps) in the key of that unit."""
    saved = dict(saved)
    if "warmup" in saved and "warmup_epochs" not in saved:
        warmup = saved.pop("warmup")
        saved.update(warmup_steps=int(warmup), warmup_epochs=None) if saved.get("steps") else \
            saved.update(warmup_epochs=warmup, warmup_steps=None)
    return saved


def dump(config, path):
    from ...files import atomic_write

    def write(tmp):
        with open(tmp, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    atomic_write(path, write)
