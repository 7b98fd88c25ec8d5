"""Checkpoints written beside training: the snapshot is taken at the step, the write goes on in a thread.

Who owns what: `BackgroundWriter` owns when a checkpoint file is written; the bytes on disk, and their
atomicity (temporary file, fsync, rename), are `checkpoint.save`'s, which it calls from its thread.
What goes into the payload, and when to save, are the loop's business.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import threading
import weakref
from typing import Any

import torch

__all__ = ["BackgroundWriter"]

_logger = logging.getLogger("torchmanager")
_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class BackgroundWriter:
    """Writes checkpoints with `checkpoint.save`'s guarantees, one at a time, in a background thread.

    `submit(payload, path)` checks the payload and the folder (raising at once, as `save` would),
    serializes it to host memory (tensors on a device are copied there: training may change the
    originals as soon as it returns), waits for the previous write and starts this one. The thread
    only writes those bytes, syncs and renames: system calls, which leave Python's lock to training.
    An error of a write reaches the caller at the next `submit`, `wait` or `close`. A process that
    exits waits for the write in progress (its thread is not a daemon) and logs an error that nobody
    read; a kill during a write leaves the previous file at `path` intact, as with `save`.

    Use it as a context manager, or call `close()` when done.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        _writers.add(self)

    @property
    def pending(self) -> bool:
        """Whether a write is in progress."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
        """Snapshot `payload` now and write it to `path` in the background, after the previous write.

        Raises:
            TypeError, CheckpointError: As `checkpoint.save`, for this payload (nothing is written).
            CheckpointError: The previous write failed (this one was started all the same).
        """
        from . import _prepare

        record, target, folder = _prepare(payload, path)
        snapshot = io.BytesIO()
        torch.save(record, snapshot)
        self._join()
        previous, self._error = self._error, None
        self._thread = threading.Thread(
            target=self._run, args=(snapshot, target, folder), name="torchmanager-checkpoint", daemon=False
        )
        self._thread.start()
        if previous is not None:
            raise previous

    def wait(self) -> None:
        """Wait for the write in progress; raise its error, if it failed."""
        self._join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for the write in progress (see `wait`)."""
        self.wait()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self._join()  # an error already propagates: this one is logged rather than hiding it
            self._log_unread()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, snapshot: io.BytesIO, path: str, folder: str) -> None:
        from . import _write

        try:
            _write(path, folder, lambda file: file.write(snapshot.getbuffer()))
        except BaseException as error:
            self._error = error

    def _log_unread(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            _logger.error("A checkpoint written in the background failed and nobody waited for it: %s", error)


@atexit.register
def _report_unread_errors() -> None:
    """At exit (after the writes' threads ended), log the error of a write that nobody waited for."""
    for writer in list(_writers):
        writer._join()
        writer._log_unread()
