"""Options on a command line, for every command that takes them (vitfast.train, vitfast.eval): each option
a flag in its --help group, each flag's text read as the option's kind and checked where it enters, and
an option given whose only effect is through another that is absent refused in one line."""
from ...cli import UsageError
from .flags import show
from .kinds import check_value, parse_text

_METAVARS = {int: "N", float: "X", "floats": "X,Y", "ints": "N,M", "pairs": "LO,HI,...", "strs": "A,B",
             "kv": "K=V,..."}


def default_note(o):
    """' (default: X)' for --help, unless the help says its default or there is none to show."""
    shown = show(o.shown or o.default)
    return "" if shown in ("None", "{}") or "default" in o.help else f" (default: {shown})"


def add_flags(parser, options, note=default_note):
    """Each Option a flag of `parser` in its group (a true|false one for a bool, given alone meaning true);
    options of one `exclusive` name in a mutually exclusive group. Every flag's default is None: given
    or not is what parse_flags reads."""
    groups, exclusive = {}, {}
    for o in options:
        g = groups.setdefault(o.group, parser.add_argument_group(o.group))
        if o.exclusive:
            if o.exclusive not in exclusive:
                exclusive[o.exclusive] = g.add_mutually_exclusive_group()
            g = exclusive[o.exclusive]
        help_text = o.help.replace("{choices}", " | ".join(o.check)) if "{choices}" in o.help else o.help
        if o.kind is bool:
            g.add_argument(o.flag, nargs="?", const="true", default=None, metavar="true|false", help=help_text)
        else:
            g.add_argument(o.flag, default=None, metavar=o.metavar or _METAVARS.get(o.kind), help=help_text + note(o))
    return parser


def parse_flags(args, options):
    """{key: value} of the flags given in parsed `args`, each read as its option's kind and checked."""
    given = {}
    for o in options:
        text = getattr(args, o.key)
        if text is not None:
            given[o.key] = parse_text(o.kind, o.default is None, text, o.flag)
            check_value(o.key, given[o.key], o.check, o.flag)
    return given


def refuse_unneeded(options, config, asked, where):
    """An option in `asked` (keys the user gave on the command line) set to something, whose `needs` is
    absent from config: refused, naming it and what it needs."""
    for o in options:
        if o.needs and o.key in asked and config[o.key] not in (None, False):
            what, present = o.needs
            if not present(config):
                raise UsageError(f"{where(o.key)} has no effect without {what() if callable(what) else what}; "
                                 "remove it or add what it needs")
