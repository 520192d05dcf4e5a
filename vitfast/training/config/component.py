"""A component's configuration: a dataclass whose fields are its options. Each field's type says the
option's kind, its `option(...)` the default, the check and the help; the flag (--kebab-case), the
--help group, the config key (the field's name) and the one-line errors are made from them. A component
checks what only several of its values tell together in check(); an option whose only effect is through
another says so with `needs`, and the resolver refuses it, given on the command line, where that other
is absent."""
import dataclasses
import types

from .kinds import Range

# A field's type -> the kind kinds.coerce reads (None allowed where the default is None).
_KINDS = {int: int, float: float, str: str, bool: bool, dict: "kv", list[float]: "floats", list[int]: "ints",
          list[list[float]]: "pairs", list[str]: "strs"}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option as the parser, the layers and the checks see it."""
    key: str
    group: str
    kind: object
    default: object
    check: object  # a Range (each element, for lists), a collection of the allowed names, or None
    help: str
    needs: tuple = None  # (what it needs, as the refusal says it (or a function saying it); test(config))
    shown: str = None  # the default as --help shows it, where None means "the run decides"
    exclusive: str = None  # options of one name are alternatives on the command line: give one
    metavar: str = None  # the value as --help names it, where the kind's name says too little

    @property
    def flag(self):
        return "--" + self.key.replace("_", "-")


def option(default, help, check=None, *, needs=None, shown=None, group=None, exclusive=None, metavar=None):
    """A component's field: its default, check (Range or allowed names), help, and what it needs."""
    meta = dict(help=help, check=check, needs=needs, shown=shown, group=group, exclusive=exclusive, metavar=metavar)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def kind_of(annotation):
    """A field's annotation (`int`, `list[float] | None`, ...) -> its kind."""
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in annotation.__args__ if a is not type(None))
    return _KINDS[annotation]


class Component:
    """The base of every component's dataclass. group: the --help group of its options; needs: what
    each of its options needs, unless the option says otherwise (needs=False: nothing)."""

    group = None
    needs = None

    @classmethod
    def options(cls):
        out = []
        for f in dataclasses.fields(cls):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            needs = cls.needs if meta["needs"] is None else meta["needs"] or None  # False: needs nothing
            out.append(Option(f.name, meta["group"] or cls.group, kind_of(f.type), default, meta["check"],
                              meta["help"], needs, meta["shown"], meta["exclusive"], meta["metavar"]))
        return out

    @classmethod
    def of(cls, config):
        """This component's typed values in a flat config (a partial one, as a Python caller may give,
        takes the defaults of the keys it lacks)."""
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})

    def check(self, config, where):
        """What only several values together tell; config: the whole resolved config, where(key): the
        source a refusal names for key's value. Raises UsageError."""


__all__ = ["Component", "Option", "option", "kind_of", "Range"]
