"""A training process that writes a checkpoint in the background and is SIGKILLed while the write is in progress,
for tests/test_background_checkpoints.py.

`python background_writer.py PATH POINT` saves `payload(1)` to PATH with `checkpoint.save` (printing
`saved 1`), then submits `payload(2)` to a `checkpoint.BackgroundWriter` and goes on "training": it
changes the submitted tensors in place at once and prints `training`. The background write stops at
POINT (see checkpoint_writer.py: `write:N` inside the file's write, `fsync`, `replace`, `replaced`), prints `paused` and waits
to be killed. POINT `none` lets the write run and the process end (its interpreter must wait for the
write); `fail` makes the write fail (a full disk) and the process end without reading the error.
`python background_writer.py --serve` runs it in children of a fork server (see fork_server.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from typing import Any
from unittest import mock

from checkpoint_writer import _pause, _say, _stopping_at, payload  # beside this script

from torchmanager_core import checkpoint


def _full_disk(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")  # as a file system reports it at fsync


def _stopping(point: str) -> Any:
    """`checkpoint_writer._stopping_at`, but `write:N` stops inside the file's write (the payload is serialized
    in memory first, by `submit`)."""
    if not point.startswith("write:"):
        return _stopping_at(point)
    real_write, size = checkpoint._Writer.write, int(point.split(":")[1])

    def write(self: Any, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) >= size:
            real_write(self, view[:size])
            self.flush()
            _pause()
        return int(real_write(self, data))

    return mock.patch.object(checkpoint._Writer, "write", write)


def main(argv: list[str]) -> None:
    path, point = argv
    checkpoint.save(payload(1), path)
    _say("saved 1")
    writer = checkpoint.BackgroundWriter()
    state = payload(2)
    if point in ("none", "fail"):
        with mock.patch.object(os, "fsync", _full_disk) if point == "fail" else contextlib.nullcontext():
            writer.submit(state, path)
            state["data"].add_(1000)  # training changes the originals while the write goes on
            _say("training")
            if point == "fail":
                writer._join()  # type: ignore[attr-defined]  # the write has failed; the process ends without reading it
        return
    with _stopping(point):  # patches of this process: the writer's thread stops there
        writer.submit(state, path)
        state["data"].add_(1000)
        _say("training")
        threading.Event().wait()  # until killed


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from fork_server import serve  # beside this script

        serve(main)
    else:
        main(sys.argv[1:])
