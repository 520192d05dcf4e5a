"""Progress of long work (training epochs, validation, calibration, the PTQ table, vitfast.eval).

On a terminal each piece gets a tqdm bar on stderr. Without one (CI, a log file) a bar would be noise:
a piece that announces itself prints one line when it starts instead, so a log never goes silent for
minutes. `set_quiet(True)` (the commands' --quiet) turns both off; results and errors still print."""
import sys

__all__ = ["set_quiet", "is_quiet", "bars_on", "bar", "echo"]

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
    """A bar's interface that draws nothing: iterating passes the items through."""

    def __init__(self, iterable=None, total=None):
        self.iterable, self.total, self.n = iterable, total, 0

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return len(self.iterable) if self.total is None else self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, *args, **kwargs):
        pass

    def set_description_str(self, *args, **kwargs):
        pass

    def write(self, text):
        echo(text)

    def close(self):
        pass


def bar(iterable=None, total=None, desc=None, unit="batch", leave=False, announce=False, **kwargs):
    """A tqdm bar over `iterable` (or one updated by hand up to `total`); a silent stand-in when bars are
    off, which prints `desc` once as a line when `announce` (and not --quiet)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if bars_on():
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is a dependency; a stripped environment still runs, without bars
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                        file=sys.stderr, **kwargs)
    if announce and desc and not _quiet:
        count = f" ({total} {unit if total == 1 else unit + ('es' if unit.endswith('ch') else 's')})" if total else ""
        print(f"{desc}{count} ...", flush=True)
    return _Silent(iterable, total)


def echo(text, file=None):
    """print(), above any bar being drawn (tqdm.write), so lines and bars do not tear each other."""
    if bars_on():
        try:
            from tqdm import tqdm

            return tqdm.write(text, file=file or sys.stdout)
        except ImportError:
            pass
    print(text, file=file or sys.stdout, flush=True)
