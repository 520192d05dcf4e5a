"""The one error path of vitfast's command lines (vitfast.train, vitfast.eval, vitfast.check).

A user's mistake — a bad value, a missing file, a wrong layout, an incompatible checkpoint, an
unavailable device — is a UsageError: `run` prints it as one line, `<prog>: <message>`, on stderr and
exits with status 2, as argparse does for its own errors. Anything else is a bug in vitfast and keeps
its traceback. `--debug` (or VITFAST_DEBUG=1) shows the traceback of a user error too."""
import argparse
import contextlib
import difflib
import os
import re
import signal
import sys
import threading
import warnings

__all__ = ["UsageError", "ArgumentParser", "blame", "run", "one_line", "first_line", "nearest", "parse_device",
           "is_out_of_memory", "out_of_memory"]


class UsageError(ValueError):
    """The user asked for something that cannot run; the message names the argument and what was expected."""


def nearest(word, choices, cutoff=0.4):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Terminal colour/style codes (ESC [ ... m and kin): some libraries (torch.load's weights_only error)
# put them in exception messages, where a log or a non-terminal stderr shows them as garbage.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _message(error):
    return _ANSI.sub("", str(error)).strip()


def one_line(error):
    """An exception's message on one line (multi-line library messages joined with '; '), without
    terminal escape codes."""
    text = _message(error) or type(error).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def first_line(error):
    """An exception's message cut to its first line (its type's name when it has none), without terminal
    escape codes."""
    text = _message(error)
    return text.splitlines()[0] if text else type(error).__name__


def is_out_of_memory(error):
    """Python's MemoryError, CUDA's torch.OutOfMemoryError, or the CPU allocator's RuntimeError
    ("DefaultCPUAllocator: can't allocate memory")."""
    torch = sys.modules.get("torch")
    if isinstance(error, MemoryError) or (torch is not None and isinstance(error, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and re.search(r"can't allocate memory|out of memory", str(error)) is not None


@contextlib.contextmanager
def out_of_memory(what, way_out):
    """Inside this block running out of memory is a UsageError, one line: `what` ran out of memory (name the
    batch size), then `way_out` (the flags that take less)."""
    try:
        yield
    except BaseException as e:
        if not is_out_of_memory(e):
            raise
        raise UsageError(f"out of memory {what}: {way_out}") from e


@contextlib.contextmanager
def blame(argument, errors=(ValueError, TypeError, OSError)):
    """Inside this block, a library error raised by the user's input (the library's documented
    ValueError/TypeError/OSError for bad input) becomes a UsageError naming `argument`."""
    try:
        yield
    except UsageError:
        raise
    except errors as e:
        text = one_line(e)
        raise UsageError(text if text.startswith(argument) else f"{argument}: {text}") from e


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one line, the nearest valid flag suggested) instead of a
    usage dump and sys.exit(2) from deep inside parse_args."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show the Python traceback of a user error too "
                                                                   "(also: VITFAST_DEBUG=1)")

    def flags(self):
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flag = unknown.group(1)
            raise UsageError(f"unknown argument {flag!r}{nearest(flag.split('=')[0], self.flags())}")
        raise UsageError(message)


def parse_device(text, argument="--device"):
    """'cpu' | 'cuda' | 'cuda:N' (None: cuda when available) -> torch.device, refusing a device this
    machine cannot run rather than falling back to another one."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(text)):
        hint = " (did you mean 'cuda'?)" if str(text).lower().startswith("gpu") else nearest(text, ["cpu", "cuda"])
        raise UsageError(f"{argument} must be cpu, cuda or cuda:N, got {text!r}{hint}")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{argument} {text}: no CUDA GPU is usable here (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{argument} {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return device


def debug_requested(argv):
    return "--debug" in argv or os.environ.get("VITFAST_DEBUG", "") not in ("", "0")


def _warning_line(prog):
    """showwarning for a command line: one line, `<prog>: warning: <message>`, naming the library that warned
    when it is not vitfast (Python's default shows a source path and line a CLI user has no use for)."""
    def show(message, category, filename, lineno, file=None, line=None):
        parts = os.path.normpath(filename).split(os.sep)
        source = next((p for p in reversed(parts[:-1]) if p in ("torch", "torchvision", "timm", "PIL", "numpy")),
                      None)
        ours = category.__module__.startswith("vitfast") or "vitfast" in parts
        where = f"{source}: " if source and not ours else ""
        from . import progress  # above a progress bar being drawn, not through it

        progress.echo(f"{prog}: warning: {where}{one_line(message)}", file=file or sys.stderr)
    return show


def run(prog, main, argv=None):
    """Run main(argv) as the command `prog`: a UsageError becomes one line on stderr and exit status 2,
    Ctrl-C a line and status 130 (a training run's stop by a signal: that stop's status, its line said);
    any other exception keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not debug_requested(argv):
        warnings.showwarning = _warning_line(prog)
    try:
        result = main(argv)
    except UsageError as e:
        if debug_requested(argv):
            raise
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt as e:
        if threading.current_thread() is threading.main_thread():  # one more Ctrl-C on the way out: not a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        status = getattr(e, "status", None)  # a stop that has said what it saved (vitfast.training.interrupt)
        if status is None:
            print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(status or 130)
    sys.exit(result if isinstance(result, int) else 0)


def plural(n, noun):
    """'1 step', '2 steps'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
