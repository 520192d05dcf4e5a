"""python -m vitfast.list: the models `--model` takes and the recipes `-c` takes, with what each is.

Models are counted on the meta device (no memory, no weights), so the largest list in a second."""
import re
import sys
from importlib import resources

import torch

import vitfast
from vitfast.cli import ArgumentParser, UsageError, run

__all__ = ["model_rows", "recipe_rows", "main"]


def _first_line(doc):
    return next((line.strip() for line in (doc or "").splitlines() if line.strip()), "")


def model_rows(patterns=("*",)):
    """[(name, input size, parameters, description)] of the registered models matching the patterns."""
    from vitfast.models.registry import _entrypoints, get_model_config

    rows = []
    for name in vitfast.list_models(list(patterns)):
        with torch.device("meta"):
            params = sum(p.numel() for p in vitfast.create_model(name).parameters())
        size = get_model_config(name)["input_size"][-1]
        rows.append((name, size, params, _first_line(_entrypoints[name].__doc__)))
    return rows


def recipe_rows():
    """[(name, model, data, where it comes from)] of the packaged configs (-c NAME): the last is the
    opening comment of the file up to its first colon or full stop."""
    from vitfast.training.config import packaged_configs, read_config_file

    rows = []
    for name in packaged_configs():
        data = read_config_file(name)
        files = [resources.files("vitfast.configs") / f"{name}{ext}" for ext in (".yaml", ".yml", ".json")]
        text = next((f.read_text() for f in files if f.is_file()), "")
        comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
        rows.append((name, data.get("model", "-"), data.get("data", "-"), re.split(r": |\. (?=[A-Z])", comment)[0]))
    return rows


def build_parser():
    p = ArgumentParser(prog="python -m vitfast.list", description="The models --model takes and the packaged "
                                                                  "recipes -c takes.")
    p.add_argument("patterns", nargs="*", default=["*"], metavar="PATTERN",
                   help="shell-style model name patterns, e.g. 'deit_*' (default: all)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--models", action="store_true", help="models only")
    which.add_argument("--recipes", action="store_true", help="recipes only")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.recipes and args.patterns != ["*"]:
        raise UsageError("PATTERN selects models; --recipes lists every recipe (give one or the other)")
    if not args.recipes:
        rows = model_rows(args.patterns)
        if not rows:
            raise UsageError(f"no model matches {' '.join(args.patterns)} (python -m vitfast.list shows them all)")
        w = max(len(r[0]) for r in rows) + 2
        print(f"{'model':<{w}}{'input':>6}{'params':>10}  description")
        for name, size, params, doc in rows:
            print(f"{name:<{w}}{size:>6}{params / 1e6:>9.2f}M  {doc}")
    if not args.models and args.patterns == ["*"]:
        rows = recipe_rows()
        w = max(len(r[0]) for r in rows) + 2
        print(f"\n{'recipe (-c)':<{w}}{'model':<34}{'data':<24}from")
        for name, model, data, doc in rows:
            print(f"{name:<{w}}{model:<34}{data:<24}{doc}")
    return 0


if __name__ == "__main__":
    run("vitfast.list", main, sys.argv[1:])
