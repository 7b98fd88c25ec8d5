"""Preemption: SIGTERM, SIGUSR1 or a first Ctrl-C during `fit` ends the run after an optimizer update, saved.

Who owns what: this module installs the signal handlers for the duration of a `fit` (main thread
only, the previous handlers back afterwards); callbacks say which files a preempted run is saved to
(`Callback.preemption_checkpoints`: a `LastCheckpoint`'s path, an `Experiment`'s `last.model`). The
loop's dispatch decides when to act: after the optimizer update that ends the current
accumulation window, or at an epoch's end, with every process agreeing on the same step; then it
saves, logs one line and raises `errors.Preempted`, a `SystemExit` with code 128 + the signal's
number (143 for SIGTERM, 138 for SIGUSR1: what shells, Docker and Kubernetes report for a process
that signal ended, so a scheduler sees the code it expects from a job it terminated), or, for
Ctrl-C, `KeyboardInterrupt` (as Python raises it; a second Ctrl-C raises it at once, unsaved).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from .errors import Preempted

__all__ = ["SIGNALS", "deferred_signals"]

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)
"""The signals `fit` defers: schedulers send SIGTERM before SIGKILL, SLURM can send SIGUSR1 ahead of a time limit."""


class SignalNote(Protocol):
    """Where a deferred signal is noted: the run's `signal`."""

    signal: int | None


@contextlib.contextmanager
def deferred_signals(run: SignalNote) -> Iterator[bool]:
    """In the body, SIGTERM, SIGUSR1 and a first Ctrl-C set `run.signal` instead of acting; yields whether any does.

    Only the main thread can handle signals, and a signal that is ignored, or handled outside
    Python (or, for SIGINT, by a handler of the user's), is left as it is. A second Ctrl-C raises
    `KeyboardInterrupt` at once. Afterwards (also after an error) the previous handlers are back, and
    a signal the loop did not act on (still in `run.signal`; not when `fit` ends with `Preempted` or
    `KeyboardInterrupt`) is raised again, for them.
    """

    def record(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and run.signal == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: out now, unsaved
        if run.signal is None:
            run.signal = signum  # only noted: the loop acts on it at the next optimizer update

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (*SIGNALS, signal.SIGINT):
            handler = signal.getsignal(signum)
            if handler is None or handler == signal.SIG_IGN:
                continue
            if signum == signal.SIGINT and handler is not signal.default_int_handler:
                continue  # the user's own Ctrl-C handler
            signal.signal(signum, record)
            previous[signum] = handler
    try:
        yield bool(previous)
    except (Preempted, KeyboardInterrupt):
        run.signal = None  # the run ends for a signal already: one more (during its checkpoint) changes nothing
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pending, run.signal = run.signal, None
        if pending is not None:
            signal.raise_signal(pending)
