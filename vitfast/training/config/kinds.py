"""The kinds of value an option takes and their checks, where each value enters (a flag, a -c file,
--set, a myrtle JSON): its type and its range or choices. Every failure is a UsageError naming where the
value came from and what was expected. A leaf: the components' dataclasses and the resolver use it."""
import re

import yaml

from ...cli import UsageError, nearest
from .flags import show


class Range:
    """Bounds of a numeric option (of each element, for a list option)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def __contains__(self, v):
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def __str__(self):
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE, NON_NEGATIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
PROBABILITY, FRACTION, OPEN_UNIT = Range(0, 1), Range(0, 1, hi_open=True), Range(0, 1, lo_open=True)

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               "floats": "a list of numbers", "ints": "a list of integers", "strs": "a list of names",
               "pairs": "pairs of numbers ([[lo, hi], ...], or lo,hi,lo,hi,... on the command line)",
               "kv": "a mapping of key: value"}


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def coerce(kind, value, nullable, where):
    """A value read from a file (YAML/JSON types) or already parsed from text, checked against the
    option's kind; lists may also come as one comma-separated string, as on the command line."""
    if value is None:
        if nullable:
            return None
        raise UsageError(f"{where}: expected {_KIND_NAMES[kind]}, got null")
    bad = UsageError(f"{where}: expected {_KIND_NAMES[kind]}, got {value!r}"
                     + (" (a string)" if isinstance(value, str) and kind in (int, float, bool) else ""))
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
        return value
    if kind is float:
        if not _is_number(value):
            raise bad
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "floats":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        out = []
        for v in value:
            if isinstance(v, bool) or not (_is_number(v) or isinstance(v, str)):
                raise bad
            try:
                out.append(float(v))
            except ValueError:
                raise bad from None
        return out
    if kind == "ints":
        return [coerce(int, v, False, where) for v in coerce("floats", value, False, where)]
    if kind == "pairs":  # VISSL's crop_scales: [[0.14, 1], [0.05, 0.14]]
        if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in value):
            value = [x for v in value for x in v] if all(len(v) == 2 for v in value) else None
        flat = coerce("floats", value, False, where) if value is not None else []
        if not flat or len(flat) % 2:
            raise bad
        return [flat[i:i + 2] for i in range(0, len(flat), 2)]
    if kind == "strs":
        if isinstance(value, str):
            return split_top_level(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad
        return list(value)
    if kind == "kv":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    raise AssertionError(kind)


def check_value(key, value, check, where):
    """Range or choices of one (already typed) value."""
    if value is None or check is None:
        return
    if not isinstance(check, Range):  # the allowed names (a tuple, or a registry's dict)
        if value not in check:
            raise UsageError(f"{where} must be one of {', '.join(check)}, got {value!r}{nearest(value, check)}")
        return
    for v in value if isinstance(value, list) else [value]:
        if v not in check:
            raise UsageError(f"{where} must be {check}, got {show(value)}")


def split_top_level(text):
    """'a,float(e=4,m=3),b' -> ['a', 'float(e=4,m=3)', 'b']: commas inside parentheses stay."""
    parts, depth, current = [], 0, ""
    for ch in str(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def parse_text(kind, nullable, text, where):
    """A command-line / --set string -> a value of `kind` (lists comma-separated; "none" is null for a
    nullable option)."""
    text = str(text)
    if kind == "kv":
        return dict(parse_kv(text, where))
    if nullable and text.strip().lower() in ("none", "null"):
        return None
    if kind in ("floats", "ints", "pairs", "strs"):
        return coerce(kind, text, False, where)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads 1e-5 as text: its floats need a dot. YAML 1.2, JSON and OmegaConf (VISSL's
    configs) read it as a number, and so do we, in config files, --model-kwargs and --set alike."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_yaml(text):
    """A YAML document (a string or a file) as Python values, 1e-5 a number."""
    return yaml.load(text, Loader=_Loader)


def parse_kv(text, where="--model-kwargs"):
    """'a=1,b=x' -> [('a', 1), ('b', 'x')], values read as YAML scalars."""
    out = []
    for item in [t for t in str(text).split(",") if t.strip()]:
        if "=" not in item:
            raise UsageError(f"{where}: expected key=value pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out.append((k.strip(), load_yaml(v)))
        except yaml.YAMLError:
            raise UsageError(f"{where}: cannot read the value of {k.strip()!r}: {v!r}") from None
    return out
