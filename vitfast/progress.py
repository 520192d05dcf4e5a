"""Progress of long work (training epochs, validation, calibration, the PTQ table, vitfast.eval).

On a terminal each piece gets a tqdm bar on stderr. Without one (CI, a log file) a bar would be noise:
a piece that announces itself prints one line when it starts instead, so a log never goes silent for
minutes. `set_quiet(True)` (the commands' --quiet) turns both off; results and errors still print."""
import sys

__all__ = ["set_quiet", "is_quiet", "bars_on", "bar", "start_line", "echo"]

_quiet = False


def set_quiet(quiet=True):
    global _quiet
    _quiet = bool(quiet)


def is_quiet():
    return _quiet


def bars_on():
    """Whether progress bars are drawn: not --quiet, and stderr is a terminal."""
    return not _quiet and sys.stderr.isatty()


class _Silent:
    """What a bar offers its callers (iterate, update, set_postfix_str, close), drawing nothing."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        pass

    def set_postfix_str(self, *args, **kwargs):
        pass

    def close(self):
        pass


def bar(iterable=None, total=None, desc=None, unit="batch", leave=False, announce=False, **kwargs):
    """A tqdm bar over `iterable` (or one updated by hand up to `total`); a silent stand-in when bars are
    off, which prints `desc` once as a line when `announce` (and not --quiet)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if bars_on():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr,
                    **kwargs)
    if announce and desc:
        count = f" ({total} {unit if total == 1 else unit + ('es' if unit.endswith('ch') else 's')})" if total else ""
        start_line(f"{desc}{count}")
    return _Silent(iterable)


def start_line(what):
    """`what ...` as a line when work starts off a terminal (on one, its bar says it), unless --quiet."""
    if not _quiet and not bars_on():
        print(f"{what} ...", flush=True)


def echo(text, file=None):
    """print(), above any bar being drawn (tqdm.write), so lines and bars do not tear each other."""
    if bars_on():
        from tqdm import tqdm

        return tqdm.write(text, file=file or sys.stdout)
    print(text, file=file or sys.stdout, flush=True)
