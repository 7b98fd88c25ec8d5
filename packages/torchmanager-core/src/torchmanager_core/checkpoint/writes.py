"""How a run's checkpoints reach the disk: one file by the main process (now, or in the background), or shards by all.

Who owns what: the loop decides when to save and builds a `Snapshot` (`checkpointing` says what is in
it); this module writes it. A single file holds what every process holds alike, the main process's
own values at the top (the layout one process writes) and, under torchrun, every process's own values
under "ranks" (gathered from all of them: a checkpoint holds each rank's random state and running sums,
not rank 0's for all). A sharded snapshot (FSDP2) is written by every process with
`sharded.ShardedCheckpointer`. Atomicity is `save`'s and the checkpointer's; a background write is
`BackgroundWriter`'s (the snapshot is serialized before `write` returns, the next write waits for it).
Every error reaches every process at the same call, so that all act alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed
from . import CheckpointError
from .background import BackgroundWriter

__all__ = ["RunWrites", "Snapshot", "on_host"]


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's content at one moment, as this process holds it.

    Attributes:
        shared: What every process holds alike (position, history, options, callbacks' states; the
            model's and optimizer's state dicts when `tensors` is None): the main process's is written.
        own: This process's own values (its random states, its running sums, an open window's gradients).
        tensors: State dicts every process writes its shards of (FSDP2's model and optimizer), or None.
    """

    shared: dict[str, Any]
    own: dict[str, Any]
    tensors: dict[str, Any] | None = None


def single_file(snapshot: Snapshot, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The payload of a single-file checkpoint: the shared values, the main process's own ones, and under torchrun
    every process's own values under "ranks" (in rank order)."""
    payload = {**snapshot.shared, **ranks[0]}
    if len(ranks) > 1:
        payload["ranks"] = ranks
    return payload


class RunWrites:
    """The checkpoint writes of one run (a `fit`): at most one in the background at a time; `close` at the end.

    Every process calls `write`, `wait` and `close` at the same points (they are collectives under torchrun).
    """

    def __init__(self) -> None:
        self._background: BackgroundWriter | None = None
        self._sharded: Any = None  # a `sharded.ShardedCheckpointer`, made at the first sharded write

    def write(self, snapshot: Snapshot, path: str, background: bool = False) -> Exception | None:
        """Write `snapshot` to `path` (in the background: return once it is snapshotted); the error every process gets.

        A write waits for the previous background write first; a failure of that one is returned here.
        """
        if snapshot.tensors is not None:
            return self._write_sharded(snapshot, path, background)
        own = on_host(snapshot.own)
        ranks = distributed.gather_objects(own) if distributed.is_distributed() else [own]
        if background:
            return distributed.on_main_process(lambda: self._writer().submit(single_file(snapshot, ranks), path))
        return distributed.on_main_process(lambda: self._write_now(single_file(snapshot, ranks), path))

    def wait(self) -> Exception | None:
        """Wait for the write in progress; the error it ended with (on every process alike), or None."""
        error = distributed.on_main_process(self._background.wait) if self._background is not None else None
        if self._sharded is not None:
            try:
                self._sharded.wait()
            except CheckpointError as failure:
                error = error or failure
        return error

    def close(self) -> Exception | None:
        """Wait for the write in progress and release the background threads; the error of that write, or None."""
        try:
            return self.wait()
        finally:
            if self._sharded is not None:
                self._sharded.close()
                self._sharded = None

    def _writer(self) -> BackgroundWriter:
        if self._background is None:
            self._background = BackgroundWriter()
        return self._background

    def _write_now(self, payload: dict[str, Any], path: str) -> None:
        from . import save  # looked up now: `checkpoint.save` is the one seam every file goes through

        try:
            if self._background is not None:
                self._background.wait()  # the previous file first: writes land in the order asked
        finally:
            save(payload, path)

    def _write_sharded(self, snapshot: Snapshot, path: str, background: bool) -> Exception | None:
        from .sharded import ShardedCheckpointer

        if self._sharded is None:
            self._sharded = ShardedCheckpointer()
        self._sharded.async_save = background
        assert snapshot.tensors is not None
        try:
            self._sharded.save(os.fspath(path), snapshot.tensors, run=snapshot.shared, rank=snapshot.own)
        except CheckpointError as error:  # DCP gathers every process's failure: each gets one
            return error
        return None


def on_host(value: Any) -> Any:
    """`value` with every tensor in it (in dicts, lists and tuples) copied to the host, for gathering or writing."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: on_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(on_host(item) for item in value)
    return value
