"""Stops asked from outside a training run: Ctrl-C (SIGINT), and the signals a scheduler sends before it
kills a job (SIGTERM: timeout, SLURM, Kubernetes, docker stop; SIGUSR1/SIGUSR2 where a scheduler is told to,
as SLURM's --signal). Each stops the run where it can be continued: the first asks, the loop finishes the
step it is in, writes checkpoint-last and stops.

A step interrupted half-way (a forward done, its backward not; some micro-batches of an accumulated step
summed, not applied) cannot be saved and resumed exactly, hence the wait. Between steps (while `safe`:
validation, where no training state moves) one process stops at once. Under torchrun the ranks must stop
at the same step, and a signal reaches them at different moments (or, as SLURM sends one to every process
and torchrun forwards its own, twice): each rank only notes it, and at every step's end poll() agrees over
all ranks whether to stop there. A second Ctrl-C in one process raises KeyboardInterrupt wherever the loop
is; a repeated signal otherwise changes nothing (the scheduler's own kill follows its grace period). On the
way out (quiet()) Ctrl-C is ignored: a KeyboardInterrupt raised inside a destructor (a DataLoader's worker
shutdown) would only print Python's "Exception ignored" traceback and be lost."""
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as torch_dist

__all__ = ["STOP_SIGNALS", "StopRequest", "Stopped", "ignore_stop_signals", "signal_name"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def signal_name(signum):
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal, its checkpoint saved and the line saying so printed: a command exits with
    `status` (128 + the signal's number, as a shell reports a process the signal ended) and says no more."""

    def __init__(self, signum):
        super().__init__(signal_name(signum))
        self.status = 128 + signum


def ignore_stop_signals(_worker_id=None):
    """A DataLoader worker's init: the terminal (Ctrl-C), SLURM and torchrun signal every process of the
    group, and a worker that died of it would break the batch the main process is finishing before it saves."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopRequest:
    """install() puts the handlers in place while the training loop runs, restore() the ones before (in the
    main thread only; elsewhere it does nothing). dist: the run's Dist (its ranks agree on the stop step);
    at_once: stop wherever the signal lands, on each rank by itself (the outputs of a run whose training is
    done and saved)."""

    def __init__(self, dist=None, at_once=False):
        self.distributed = dist is not None and dist.enabled
        self.announce = dist is None or dist.is_main
        self.group = dist.side_group if self.distributed else None
        self.at_once = at_once
        self.signum = None  # the signal this process received first
        self.since = None  # when (time.monotonic())
        self.stopping = None  # the signal the ranks agreed to stop for
        self.safe, self.at_boundary = at_once, False
        self.saved = False  # set by the loop once it has written the checkpoint to resume from
        self._previous, self._unraisable = {}, None

    @property
    def requested(self):
        """Whether this process has been asked to stop (poll(): whether the run stops)."""
        return self.signum is not None or self.stopping is not None

    @property
    def name(self):
        """The stop's signal as a user knows it ('Ctrl-C', 'SIGTERM')."""
        signum = self.stopping or self.signum
        return None if signum is None else signal_name(signum)

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
            self._unraisable, sys.unraisablehook = sys.unraisablehook, self._hook
        return self

    def restore(self):
        if self._previous:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            sys.unraisablehook = self._unraisable
            self._previous = {}

    def quiet(self):
        """Ignore every stop signal from now until restore(): the run is on its way out."""
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)

    def poll(self):
        """At a step's end, on every rank: whether the run stops here. Under torchrun the ranks agree (a
        signal any rank received stops them all), so every rank must call it as often."""
        if self.stopping is None:
            signum = self.signum or 0
            if self.group is not None:
                agreed = torch.tensor([signum])
                torch_dist.all_reduce(agreed, op=torch_dist.ReduceOp.MAX, group=self.group)
                signum = int(agreed.item())
            self.stopping = signum or None
        return self.stopping is not None

    def all_done(self):
        """Wait for every rank to get here (each has saved and said its part): a rank that exited first
        would have torchrun kill the others mid-write."""
        if self.group is not None:
            torch_dist.barrier(group=self.group)

    def seconds_since(self):
        """Seconds since this process received the signal (None: it did not)."""
        return None if self.since is None else time.monotonic() - self.since

    def _hook(self, unraisable):
        # our KeyboardInterrupt, raised while a destructor ran: the stop it asked for goes on without it
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self._unraisable(unraisable)

    def _handle(self, signum, frame):
        if self.signum is not None:
            if signum == signal.SIGINT and not self.distributed:  # Ctrl-C again: no checkpoint, out now
                self.at_boundary = False
                self.quiet()
                raise KeyboardInterrupt
            return  # a repeat (SLURM's signal and torchrun's copy of it): the stop is under way
        self.signum, self.since = signum, time.monotonic()
        if self.safe and (self.at_once or not self.distributed):  # no step in progress: stop here
            self.stopping, self.at_boundary = signum, True
            raise KeyboardInterrupt
        if self.announce:
            # os.write, not print: the signal may have arrived in the middle of a print to the same stream
            os.write(2, f"\n{self._announcement(signum)}\n".encode())

    def _announcement(self, signum):
        if self.distributed:
            return (f"{signal_name(signum)}: every rank finishes this step, then the checkpoint to resume from is "
                    "saved")
        again = " (Ctrl-C again to quit at once, without one)" if signum == signal.SIGINT else ""
        return f"{signal_name(signum)}: finishing this step, then saving a checkpoint to resume from{again}"
