"""Ctrl-C during training: the first one stops the run where it can be continued, the second at once.

A step interrupted half-way (a forward done, its backward not; some micro-batches of an accumulated
step summed, not applied) cannot be saved and resumed exactly, so the first SIGINT only asks: the
loop finishes the step it is in, writes checkpoint-last.pt and stops. Between steps (while `safe`:
validation, where no training state moves) there is nothing to finish and it stops at once. A second
Ctrl-C raises KeyboardInterrupt wherever the loop is; after it, and while the run cleans up on its
way out (quiet()), Ctrl-C is ignored: a KeyboardInterrupt raised inside a destructor (a DataLoader's
worker shutdown) would only print Python's "Exception ignored" traceback and be lost."""
import os
import signal
import sys
import threading

__all__ = ["StopRequest", "ignore_sigint"]


def ignore_sigint(_worker_id=None):
    """A DataLoader worker's init: the terminal sends Ctrl-C to every process of the group, and a worker
    that died of it would break the batch the main process is finishing before it saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """install() puts the handler in place while the training loop runs, restore() the one before. In the
    main thread only; elsewhere, or not enabled (torchrun's ranks, which would each stop at a different
    step), it does nothing."""

    def __init__(self, enabled=True):
        self.enabled, self.requested, self.safe, self.at_boundary = enabled, False, False, False
        self.saved = False  # set by the loop once it has written the checkpoint to resume from
        self._previous, self._unraisable = None, None

    def install(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._unraisable, sys.unraisablehook = sys.unraisablehook, self._hook
        return self

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._unraisable
            self._previous = None

    def quiet(self):
        """Ignore Ctrl-C from now until restore(): the run is on its way out."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _hook(self, unraisable):
        # our KeyboardInterrupt, raised while a destructor ran: the stop it asked for goes on without it
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self._unraisable(unraisable)

    def _handle(self, signum, frame):
        if self.requested:  # the second Ctrl-C: no checkpoint, out now
            self.at_boundary = False
            self.quiet()
            raise KeyboardInterrupt
        self.requested = True
        if self.safe:  # between steps: the state on hand is a step boundary's
            self.at_boundary = True
            raise KeyboardInterrupt
        # os.write, not print: the signal may have arrived in the middle of a print to the same stream
        os.write(2, b"\nCtrl-C: finishing this step, then saving a checkpoint to resume from (Ctrl-C again to quit "
                    b"at once, without one)\n")
