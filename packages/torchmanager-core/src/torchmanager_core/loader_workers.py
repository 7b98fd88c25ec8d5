"""Loader processes and the job's signals: SIGTERM or SIGUSR1 sent to the whole job leaves them running.

Who owns what: SLURM signals every process of a job, and torchrun's agent a worker's whole process
group, so a `DataLoader`'s worker processes get the SIGTERM meant for the training process. torch's
workers die of a SIGTERM that does not come from their main process: the main process then raises in
the middle of its step and never saves. `protect_workers` makes a loader's workers ignore those two
signals, on Linux (where `sigwaitinfo` tells who sent a signal): SIGTERM from their main process
still ends a worker, as torch's shutdown and multiprocessing's exit expect; the main process handles
the job's signal (`preemption`) and ends its workers when it is done. The loop applies it to every
loader it iterates.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["protect_workers", "shield_worker"]

_SIGNALS = frozenset(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


def protect_workers(source: object) -> None:
    """Make the worker processes of `source`'s loader ignore SIGTERM and SIGUSR1 sent to the job.

    `source` is a `DataLoader`, or has one as `.loader` (a torchmanager `Dataset`); anything else, and a
    loader without workers, is left as it is. The loader's `worker_init_fn` is wrapped (once: calling
    it again changes nothing) and still runs after the protection; workers started from now on are
    protected.
    """
    loader = source if isinstance(source, DataLoader) else getattr(source, "loader", None)
    if not isinstance(loader, DataLoader) or loader.num_workers == 0 or isinstance(loader.worker_init_fn, _Shielded):
        return
    loader.worker_init_fn = _Shielded(loader.worker_init_fn)


class _Shielded:
    """A `worker_init_fn` that shields the worker, then calls the loader's own (picklable, for spawned workers)."""

    def __init__(self, init: Callable[[int], Any] | None) -> None:
        self.init = init

    def __call__(self, worker_id: int) -> None:
        shield_worker()
        if self.init is not None:
            self.init(worker_id)


def shield_worker() -> None:
    """In a loader process: from now on SIGTERM and SIGUSR1 from others than the main process are ignored.

    The signals are blocked, and a thread takes them with `sigwaitinfo`: SIGTERM from the main process
    (or the process that started this one) ends this process at once, as torch's own handler does;
    any other is dropped. Without `sigwaitinfo` (macOS, Windows) nothing changes.
    """
    if not _SIGNALS or not hasattr(signal, "sigwaitinfo") or not hasattr(signal, "pthread_sigmask"):
        return
    parent = multiprocessing.parent_process()
    senders = {os.getppid()} | ({parent.pid} if parent is not None and parent.pid is not None else set())
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # threads started from now on inherit the mask
    threading.Thread(target=_take_signals, args=(senders,), name="torchmanager-worker-signals", daemon=True).start()


def _take_signals(senders: set[int]) -> None:
    while True:
        info = signal.sigwaitinfo(_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid in senders:
            os._exit(0)  # the main process ends its worker (torch's shutdown, multiprocessing's exit)
