"""A checkpoint writer for tests/test_kill_during_write.py, that stops at a chosen point of a save to be SIGKILLed there.

`python checkpoint_writer.py PATH START SAVES POINT` saves `payload(START)`, `payload(START + 1)`,
... to PATH with `torchmanager_core.checkpoint.save`, printing `saved <counter>` after each of
SAVES whole saves; the next save stops at POINT, prints `paused` and waits to be killed:

- `write:N`: inside the payload's write, once its first N bytes are in the temporary file;
- `fsync`: the payload written, before it is flushed to disk;
- `replace`: before the temporary file is renamed over PATH;
- `replaced`: right after the rename, before the save cleans up and returns.

The stop is a wait inside the real `checkpoint.save` (torch.save, os.fsync and os.replace are
wrapped in this process), so the kill lands at POINT however loaded the machine is.
`python checkpoint_writer.py --serve` runs it in children of a fork server (see fork_server.py).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn
from unittest import mock

import torch

from torchmanager_core import checkpoint

SIZE = 1 << 20  # float32 elements: 4 MB
POINTS = ("write:N", "fsync", "replace", "replaced")


def payload(counter: int) -> dict[str, Any]:
    """The checkpoint number `counter`: every part of it can be checked against the counter."""
    return {
        "counter": counter,
        "data": torch.arange(SIZE, dtype=torch.float32) + counter,  # exact: below 2**24
        "note": f"checkpoint {counter}",
        "nested": {"counter": torch.tensor(counter), "list": [counter, -counter]},
    }


def _say(line: str) -> None:
    """Print `line` in one write (`print` makes two when unbuffered), so that a kill never cuts it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _pause() -> NoReturn:
    _say("paused")
    while True:
        signal.pause()


class _CutAt:
    """A file that takes the first `size` bytes written to it, then pauses the process."""

    def __init__(self, file: Any, size: int) -> None:
        self.file, self.left = file, size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) >= self.left:
            self.file.write(view[: self.left])
            self.file.flush()
            _pause()
        self.left -= len(view)
        return int(self.file.write(view))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _stopping_at(point: str) -> Any:
    """A patch of this process that makes the next `checkpoint.save` stop at `point`."""
    if point.startswith("write:"):
        real_save, size = torch.save, int(point.split(":")[1])
        return mock.patch.object(torch, "save", lambda obj, f, **kw: real_save(obj, _CutAt(f, size), **kw))
    if point == "fsync":
        return mock.patch.object(os, "fsync", lambda fd: _pause())
    real_replace = os.replace
    if point == "replace":
        return mock.patch.object(os, "replace", lambda src, dst: _pause())
    if point == "replaced":
        return mock.patch.object(os, "replace", lambda src, dst: (real_replace(src, dst), _pause()))
    raise ValueError(f"POINT must be one of {POINTS}. Received: point={point!r}")


def main(argv: list[str]) -> None:
    """Save SAVES checkpoints from START on, then stop at POINT of the next one (see the module)."""
    path, start, saves, point = argv[0], int(argv[1]), int(argv[2]), argv[3]
    for counter in range(start, start + saves):
        checkpoint.save(payload(counter), path)
        _say(f"saved {counter}")
    with _stopping_at(point):
        checkpoint.save(payload(start + saves), path)
    raise AssertionError(f"The save ended without reaching {point!r}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from fork_server import serve  # beside this script

        serve(main)
    else:
        main(sys.argv[1:])
