"""Sharded checkpoints: a folder every process writes its shards into, complete atomically, loadable by any number.

Who owns what: the strategy gives the state dicts (a sharded model's are DTensors, `get_state_dict`);
the loop gives the run's plain values and each process's own values (its random state, its running
sums); this module writes them with `torch.distributed.checkpoint` (DCP) and reads them back without
running code from the files (`dcp_reading`). The single-file format is `checkpoint.save`/`load`,
which this module uses for its small files; `reshard` decides whether a run may go on with another
number of processes.

Layout of a checkpoint at `path` (a folder):

    path/complete.pt           names the complete version (written last, atomically, by rank 0)
    path/v<n>-<id>/.metadata   DCP's index of the tensors (rank 0, after every process wrote)
    path/v<n>-<id>/__<r>_0.distcp  the tensors process r wrote (each shard once)
    path/v<n>-<id>/run.pt      the run's plain values (rank 0)
    path/v<n>-<id>/rank<r>.pt  process r's own values

A save writes a new version folder and then `complete.pt`: a crash at any point leaves the previous
version named there, whole. Rank 0 removes every other version once a new one is complete.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemWriter
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import WriteResult

from .. import distributed
from . import (
    SHARDED_COMPLETE,
    CheckpointError,
    CheckpointWriteError,
    _check_loadable,
    is_sharded_checkpoint,
    load,
    save,
)
from .dcp_reading import SafePlanner, SafeReader

__all__ = [
    "COMPLETE",
    "Loaded",
    "ShardedCheckpointer",
    "is_sharded_checkpoint",
    "holds",
    "load_sharded",
    "load_tensors",
    "read_plain",
    "save_full_state_dict",
]

COMPLETE = SHARDED_COMPLETE
"""The file in a sharded checkpoint's folder that names its complete version."""

_FORMAT_KEYS = ("format", "format_version", "torchmanager_version")


@dataclass(frozen=True)
class Loaded:
    """What `load_sharded` read besides the tensors it loaded in place.

    Attributes:
        run: The run's plain values (as given to `save`).
        ranks: Each writing process's own values, in rank order (`len(ranks)` processes wrote it).
        folder: The version folder read.
    """

    run: dict[str, Any]
    ranks: list[dict[str, Any]]
    folder: str

    @property
    def world_size(self) -> int:
        """How many processes wrote the checkpoint."""
        return len(self.ranks)


class ShardedCheckpointer:
    """Writes sharded checkpoints, in the background with `async_save`; one per run (it holds the pending write).

    Every process calls `save` at the same point with its own shards. With `async_save` the call
    returns once the tensors are copied to host memory (training may change the originals), the
    files are written by a thread, and the next `save` (or `wait`) waits for the write before it
    starts: a failed write raises there. Call `close` at the end of the run.

    Args:
        async_save: Write in the background.
    """

    def __init__(self, *, async_save: bool = False) -> None:
        self.async_save = async_save
        self._pending: Future[None] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchmanager-checkpoint")
        self._stager: DefaultStager | None = None
        self._group: Any = None
        self._versions: dict[str, tuple[int, str]] = {}  # folder -> (last version number, this run's id)

    def save(
        self,
        path: str | os.PathLike[str],
        tensors: Mapping[str, Any],
        *,
        run: Mapping[str, Any] | None = None,
        rank: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a checkpoint at `path`; a collective: every process calls it at the same point.

        Args:
            path: The checkpoint's folder (made if missing); an earlier checkpoint there is replaced
                once this one is complete.
            tensors: State dicts (model, optimizers) with this process's shards: DTensors, or tensors
                every process holds alike (written once).
            run: Plain values every process holds alike (position, history, callbacks' states);
                rank 0's are written. Tensors, numbers, str, None and containers of them.
            rank: This process's own values (its random state, its running sums).
        Raises:
            CheckpointError: `path` is a file.
            CheckpointWriteError: Writing failed on a process (the disk refused it), or the previous
                asynchronous write did (raised here, once); the previous checkpoint is kept.
            TypeError: A value `load_sharded` could not read back without running code.
        """
        self.wait()
        _check_values(tensors, "tensors")
        files = {f"rank{distributed.get_rank()}.pt": dict(rank or {})}
        if distributed.is_main_process():
            files["run.pt"] = dict(run or {})
        for name, payload in files.items():
            _check_loadable(payload, name[: -len(".pt")])
        folder = os.fspath(path)
        if os.path.isfile(folder):
            raise CheckpointError(
                f"`{folder}` is a file, and a sharded checkpoint is a folder; give another path, or remove the "
                f"file. Received: path={folder!r}"
            )
        version = self._next_version(folder)
        writer = _Writer(os.path.join(folder, version), files)
        _quiet_in_one_process()
        if not self.async_save:
            _write(dict(tensors), writer, folder, version, None)
            return
        staged = self._stage(dict(tensors))
        self._pending = self._writer.submit(_write, staged, writer, folder, version, self._process_group())

    def wait(self) -> None:
        """Wait for the pending asynchronous write; raise its error (once).

        Raises:
            CheckpointWriteError: The write failed; the previous checkpoint at its path is intact.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the pending write and stop the background thread."""
        try:
            self.wait()
        finally:
            self._writer.shutdown(wait=True)
            if self._stager is not None:
                self._stager.close()

    def _next_version(self, folder: str) -> str:
        """This save's version name, alike on every process: one collective at the first save to a folder."""
        key = os.path.abspath(folder)
        if key not in self._versions:
            first = (_complete_number(folder), uuid.uuid4().hex[:8]) if distributed.is_main_process() else None
            self._versions[key] = distributed.from_main_process(first)
        number, run_id = self._versions[key]
        self._versions[key] = (number + 1, run_id)
        return f"v{number + 1:06d}-{run_id}"

    def _stage(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """The tensors copied to host memory (pinned when CUDA is there), in buffers reused by the next save."""
        if self._stager is None:
            pinned = torch.cuda.is_available()
            self._stager = DefaultStager(StagingOptions(pinned, False, False, False))
        staged = self._stager.stage(tensors)
        assert isinstance(staged, dict)  # synchronous staging returns the state dict itself
        return staged

    def _process_group(self) -> Any:
        """A gloo group of every process for the background write's collectives, apart from training's."""
        if not distributed.is_distributed():
            return None
        if self._group is None:
            self._group = dist.new_group(backend="gloo")
        return self._group


class _Writer(FileSystemWriter):
    """DCP's file writer that first writes this process's small files (`run.pt`, `rank<r>.pt`).

    Inside DCP's write step, so that a process failing to write them fails the save on every process
    (DCP gathers the errors) instead of leaving the others in its collectives; and `.metadata`, which
    DCP writes once every process's step returned, then also means the small files are there.
    """

    def __init__(self, path: str, files: Mapping[str, dict[str, Any]]) -> None:
        super().__init__(path)
        self.files = files

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> torch.futures.Future[list[WriteResult]]:
        for name, payload in self.files.items():
            save(payload, os.path.join(os.fspath(self.path), name))
        return super().write_data(plan, planner)


def _write(tensors: dict[str, Any], writer: _Writer, folder: str, version: str, group: Any) -> None:
    """Write a version with DCP, then (rank 0) name it complete; in the background thread or not."""
    try:
        dcp_save(tensors, storage_writer=writer, process_group=group, no_dist=not distributed.is_distributed())
    except (Exception, CheckpointException) as error:
        raise _write_error(folder, _cause(error)) from error
    if distributed.is_main_process():
        _commit(folder, version, distributed.get_world_size())


_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def _check_values(value: Any, where: str) -> None:
    """Raise `TypeError` naming the first value other than a tensor that `weights_only` loading would refuse.

    DCP pickles such values (an optimizer's hyperparameters) whole; `load_sharded` reads them back with
    `weights_only`, so a value that needs code to rebuild is refused now rather than at the resume.
    """
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_values(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_values(item, f"{where}[{index}]")
        return
    if type(value) in _PLAIN:
        return
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as error:
        raise TypeError(
            f"`{where}` is a {type(value).__name__}, which loading could only rebuild by running code from the "
            f"checkpoint; keep tensors, numbers, str and lists, tuples or dicts of them. Received: {where}={value!r}"
        ) from error


_VERSION = re.compile(r"v(\d{6,})-[0-9a-f]{8}")


def _complete_number(folder: str) -> int:
    """The number of the complete version at `folder` (0 when none)."""
    with contextlib.suppress(FileNotFoundError, CheckpointError):
        match = _VERSION.fullmatch(str(load(os.path.join(folder, COMPLETE)).get("version")))
        if match:
            return int(match.group(1))
    return 0


def _commit(folder: str, version: str, world: int) -> None:
    """Name `version` complete (atomically), then remove the versions before it (older, or left by a killed write).

    Called by rank 0 once DCP wrote `.metadata`, which it does after every process's write step
    returned. A later version may be in progress already (another process may have started the next
    save), so only versions numbered up to this one are removed.
    """
    save({"version": version, "world_size": world}, os.path.join(folder, COMPLETE))
    number = _version_number(version)
    for name in os.listdir(folder):
        older = _version_number(name) < number or (_version_number(name) == number and name != version)
        if older and os.path.isdir(os.path.join(folder, name)):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _version_number(name: str) -> float:
    """A version folder's number; infinity for another name (never removed)."""
    match = _VERSION.fullmatch(name)
    return int(match.group(1)) if match else math.inf


def _cause(error: BaseException) -> BaseException:
    """The first process's own error inside DCP's `CheckpointException` (a BaseException gathering them)."""
    if isinstance(error, CheckpointException) and error.failures:
        return next(iter(error.failures.values()))[0]
    return error


def _write_error(folder: str, error: BaseException) -> CheckpointError:
    """The error of a failed background write: a `CheckpointWriteError` when the disk refused it."""
    reason = str(error).split("\n", 1)[0][:300]
    message = (
        f"Cannot save sharded checkpoint `{folder}`: writing it failed ({type(error).__name__}: {reason}); the "
        f"previous checkpoint at this path is kept. Free disk space, or save to another folder. Received: path={folder!r}"
    )
    if isinstance(error, OSError):
        failure = CheckpointWriteError(message)
        failure.errno = error.errno
        return failure
    return CheckpointError(message)


def _quiet_in_one_process() -> None:
    """Silence DCP's warning that it runs in a single process (what a one-process run means), once.

    The warning is raised in DCP's writer thread too, so the filter is process-wide, for its text alone.
    """
    if not distributed.is_distributed():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def load_sharded(path: str | os.PathLike[str], tensors: dict[str, Any]) -> Loaded:
    """Read the complete version of the checkpoint at `path`: `tensors` is filled in place; no code from the files runs.

    A collective: every process calls it with its own `tensors`, the state dicts of the model and
    optimizers as the strategy gives them now (their layout says which shards this process reads,
    whatever number of processes wrote them). Tensor data is read with `weights_only`, DCP's index
    with an unpickler that builds only DCP's own metadata classes, and other values (an optimizer's
    hyperparameters) with `weights_only`.

    Raises:
        FileNotFoundError: No checkpoint at `path`.
        CheckpointError: No version is complete, the files hold Python objects, or are corrupt.
    """
    target, world = _complete_version(path)
    load_tensors(target, tensors)
    return _read_values(target, world)


def read_plain(path: str | os.PathLike[str]) -> Loaded:
    """The plain values of the complete version at `path` (the run's and each writing process's), tensors left
    on disk (`load_tensors` reads them, from `Loaded.folder`: the same version). Reads no code; not a collective.

    Raises:
        FileNotFoundError: No checkpoint at `path`.
        CheckpointError: No version is complete, or its files are corrupt.
    """
    return _read_values(*_complete_version(path))


def _complete_version(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(the folder of the complete version at `path`, the number of processes that wrote it)."""
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Sharded checkpoint `{folder}` does not exist; check the path. Received: path={folder!r}"
        )
    if not is_sharded_checkpoint(folder):
        raise CheckpointError(
            f"`{folder}` holds no complete sharded checkpoint (no `{COMPLETE}`: its first save did not finish); "
            f"resume from another checkpoint. Received: path={folder!r}"
        )
    marker = load(os.path.join(folder, COMPLETE))
    version, world = marker.get("version"), marker.get("world_size")
    if not isinstance(version, str) or type(world) is not int or os.sep in version:
        raise CheckpointError(f"`{os.path.join(folder, COMPLETE)}` is corrupt. Received: marker={marker!r}")
    return os.path.join(folder, version), world


def _read_values(target: str, world: int) -> Loaded:
    run = _plain(load(os.path.join(target, "run.pt")))
    ranks = [_plain(load(os.path.join(target, f"rank{rank}.pt"))) for rank in range(world)]
    return Loaded(run, ranks, target)


def holds(version: str | os.PathLike[str], prefix: str) -> bool:
    """Whether the version folder `version` holds a tensor or value whose key starts with `prefix` (nested keys
    joined by dots: "optimizer.state." for an optimizer's state)."""
    metadata = SafeReader(os.fspath(version)).read_metadata()
    return any(key.startswith(prefix) for key in metadata.state_dict_metadata)


def load_tensors(version: str | os.PathLike[str], tensors: dict[str, Any]) -> None:
    """Fill `tensors` in place from the version folder `version` (`Loaded.folder`); a collective (see `load_sharded`).

    Raises:
        CheckpointError: The files hold Python objects, are corrupt, or do not fit `tensors`.
    """
    target = os.fspath(version)
    reader = SafeReader(target)
    reader.read_metadata()  # its refusal as it is (DCP would wrap it)
    _quiet_in_one_process()
    try:
        dcp_load(tensors, storage_reader=reader, planner=SafePlanner(), no_dist=not distributed.is_distributed())
    except (Exception, CheckpointException) as error:
        cause = _cause(error)
        if isinstance(cause, CheckpointError):
            raise cause from error
        reason = str(cause).split("\n", 1)[0][:300]
        raise CheckpointError(
            f"Sharded checkpoint `{target}` cannot be loaded into the given state dicts ({type(cause).__name__}: "
            f"{reason}); give state dicts of the model and optimizers it was written from, or restore the folder. "
            f"Received: path={target!r}"
        ) from error


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in _FORMAT_KEYS}


def save_full_state_dict(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the model's whole, unsharded `state_dict` to one file, for inference; a collective of every process.

    The shards are gathered to rank 0's host memory, and rank 0 writes a single-file checkpoint
    holding them under `"model"` (`checkpoint.save`: atomic). Read it with
    `torch.load(path, weights_only=True)["model"]` into an unsharded model.

    Raises:
        CheckpointError: The file's folder does not exist or is not writable (on every process).
        CheckpointWriteError: The disk refused the file (on every process).
    """
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    error = distributed.on_main_process(lambda: save({"model": state}, path))
    if error is not None:
        raise error
