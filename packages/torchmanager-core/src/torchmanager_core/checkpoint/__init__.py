"""The checkpoint file format: a dict of state dicts and plain values that loads without running code.

Owns the bytes on disk: `save` writes atomically (temporary file, fsync, `os.replace`),
`BackgroundWriter` does the same in a thread from a snapshot taken at once, `load` reads
with `weights_only=True` unless the caller trusts the file, and `pack_model`/`unpack_model` store a
model's structure without its weights. What goes into the payload (which state dicts, epoch, RNG
states) is the managers' business. `upstream` reads files written by upstream torchmanager 1.5.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import glob
import io
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import IO, Any, cast

import torch

from ..__about__ import __version__

__all__ = [
    "BackgroundWriter",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointWriteError",
    "SHARDED_COMPLETE",
    "exists",
    "is_sharded_checkpoint",
    "is_sharded_folder",
    "list_checkpoints",
    "load",
    "pack_model",
    "save",
    "unpack_model",
]

FORMAT: str = "torchmanager.checkpoint"
"""Value of the `"format"` key that marks a file as ours."""

FORMAT_VERSION: int = 2
"""Version of the layout of the checkpoint dict; bumped when a reader of an older version could misread it."""

_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.dtype, torch.device)
_CONTAINER_TYPES = (list, tuple, set, dict, collections.OrderedDict, collections.Counter)
_ALLOWED = "tensors, numbers, str, bytes, None, torch.Size/dtype/device and lists, tuples, sets or dicts of those"


SHARDED_COMPLETE: str = "complete.pt"
"""The file in a sharded checkpoint's folder naming its complete version (`sharded`)."""


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint is at `path`: a file, or a sharded checkpoint's folder with a complete version."""
    return os.path.isfile(path) or os.path.isfile(os.path.join(os.fspath(path), SHARDED_COMPLETE))


def is_sharded_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a sharded checkpoint's folder with a complete version (read without importing DCP)."""
    return os.path.isfile(os.path.join(os.fspath(path), SHARDED_COMPLETE))


def is_sharded_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder a sharded checkpoint was written into (complete, or its first save interrupted)."""
    if not os.path.isdir(path):
        return False
    return any(name == SHARDED_COMPLETE or re.fullmatch(r"v\d{6,}-[0-9a-f]{8}", name) for name in os.listdir(path))


class CheckpointError(ValueError):
    """A checkpoint file cannot be written or read as a torchmanager checkpoint."""


class CheckpointWriteError(CheckpointError, OSError):
    """The disk refused a checkpoint (full, quota, file size limit): a `CheckpointError` and an `OSError`, with
    the failed write's `errno`."""


def _check_loadable(value: Any, where: str) -> None:
    """Raise `TypeError` naming the first value under `where` that `weights_only` loading could not read back."""
    kind = type(value)
    if kind in (torch.Tensor, torch.nn.Parameter) or kind in _LEAF_TYPES:
        return
    if kind not in _CONTAINER_TYPES:
        raise TypeError(
            f"Checkpoint payload values must be {_ALLOWED}, so that loading the file runs no code; "
            f"store `module.state_dict()` instead of the object itself. Received: {where}={kind.__name__}"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_loadable(key, f"{where} key {key!r}")
            _check_loadable(item, f"{where}[{key!r}]")
    else:
        for index, item in enumerate(value):
            _check_loadable(item, f"{where}[{index}]")


def _new_file_mode() -> int:
    """The permission bits a plain `open(path, "w")` would give, as `mkstemp` creates files with 0o600."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # no read-only query exists elsewhere
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); filesystems that cannot fsync a folder are skipped."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Atomically write `payload` with the format marker, so a crash leaves any previous file intact.

    Args:
        payload: State dicts and plain values; keys `format`, `format_version` and
            `torchmanager_version` are set by this function.
        path: The checkpoint file; its folder must exist.
    Raises:
        TypeError: `payload` is not a dict, or holds a value `torch.load(weights_only=True)` cannot read.
        CheckpointError: The folder is missing or not writable.
        CheckpointWriteError: Writing failed (disk full, quota, file size limit); the previous file at
            `path` is intact and no temporary file is left.
    """
    record, path, folder = _prepare(payload, path)
    _write(path, folder, lambda file: torch.save(record, cast(IO[bytes], file)))  # torch.save needs `write`, `flush`


def _prepare(payload: dict[str, Any], path: str | os.PathLike[str]) -> tuple[dict[str, Any], str, str]:
    """(the record to write: `payload` with the format markers, the path, its folder), or `save`'s errors."""
    if not isinstance(payload, dict):
        raise TypeError(
            f"`payload` must be a dict of state dicts and plain values. Received: payload={type(payload).__name__}"
        )
    for key, value in payload.items():
        if not isinstance(key, str):
            raise TypeError(f"Checkpoint payload keys must be str. Received: key={key!r}")
        _check_loadable(value, f"payload[{key!r}]")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckpointError(
            f"Cannot save checkpoint `{path}`: its folder `{folder}` does not exist; create it first "
            f"(os.makedirs(folder, exist_ok=True)). Received: path={path!r}"
        )
    record = {**payload, "format": FORMAT, "format_version": FORMAT_VERSION, "torchmanager_version": __version__}
    return record, path, folder


def _write(path: str, folder: str, dump: Callable[[_Writer], object]) -> None:
    """Let `dump` write the checkpoint to a temporary file in `folder`, fsync it, and rename it to `path` (see `save`)."""
    started = time.time()
    try:
        fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise CheckpointError(
            f"Cannot save checkpoint `{path}`: folder `{folder}` is not writable ({error.strerror}); choose a "
            f"writable folder or fix its permissions. Received: path={path!r}"
        ) from error
    writer: _Writer | None = None
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), _new_file_mode())
            writer = _Writer(file)
            dump(writer)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temp_path)
        cause = writer.error if writer is not None and writer.error is not None else error
        if isinstance(cause, OSError):
            failure = CheckpointWriteError(
                f"Cannot save checkpoint `{path}`: writing it failed ({cause.strerror or cause}); the previous "
                f"checkpoint at this path is kept. Free disk space, raise the quota or file size limit, or save "
                f"to another folder. Received: path={path!r}"
            )
            failure.errno = cause.errno
            raise failure from cause
        raise
    _fsync_folder(folder)
    _remove_stale_temporaries(path, started)


class _Writer:
    """A file for `torch.save` that keeps the `OSError` of a failed write (torch reports it as a bare RuntimeError)."""

    def __init__(self, file: io.BufferedWriter) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _remove_stale_temporaries(path: str, before: float) -> None:
    """Delete temporary files of `path` that writes killed earlier left behind (older than this write)."""
    folder, name = os.path.split(os.path.abspath(path))
    for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        with contextlib.suppress(OSError):
            if os.path.getmtime(leftover) < before:
                os.remove(leftover)


def _read(path: str, map_location: Any, trusted: bool) -> Any:
    """`torch.load` with its failure modes turned into `CheckpointError`s that say what to do.

    A trusted file is unpickled in full, with upstream torchmanager's classes read as plain records.
    """
    try:
        if trusted:
            from . import upstream

            return torch.load(path, map_location=map_location, weights_only=False, pickle_module=upstream)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not trusted and "Unsupported global" in str(error):
            raise CheckpointError(
                f"Checkpoint `{path}` contains Python objects, and loading them would run code from the file; "
                f"it was refused. Pass `trusted=True` to load it, only for files you trust. Received: path={path!r}"
            ) from error
        raise _corrupt(path, error) from error
    except (PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise _corrupt(path, error) from error


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    reason = str(error).split("\n", 1)[0][:200]
    return CheckpointError(
        f"Checkpoint `{path}` is truncated or corrupt ({type(error).__name__}: {reason}); restore it from a "
        f"backup or save it again. Received: path={path!r}"
    )


def load(path: str | os.PathLike[str], *, map_location: Any = None, trusted: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by `save`; by default no code from the file runs.

    With `trusted=True` the file is unpickled in full (this runs code from it): a checkpoint written by
    upstream torchmanager 1.5 is converted to our payload (`model`, `model_structure`, `optimizer`,
    `optimizer_class`, `epoch`, see `upstream.to_payload`), and another dict without our marker is
    returned as it is.

    Args:
        path: The checkpoint file.
        map_location: Passed to `torch.load` (a device, str, dict or callable).
        trusted: Allow pickled Python objects; only for files you trust.
    Returns:
        The payload given to `save`, plus `format`, `format_version` and `torchmanager_version`.
    Raises:
        FileNotFoundError: No file at `path`.
        CheckpointError: The file is corrupt, needs code while not trusted, is not ours, or is newer than us.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file `{path}` does not exist; check the path. Received: path={path!r}")
    if os.path.isdir(path):
        raise CheckpointError(
            f"Checkpoint path `{path}` is a folder; give the path of a checkpoint file. Received: path={path!r}"
        )
    data = _read(path, map_location, trusted)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"`{path}` is not a torchmanager checkpoint: it holds a {type(data).__name__}, not a dict; "
            f"read it with `torch.load` instead. Received: path={path!r}"
        )
    if data.get("format") != FORMAT:
        if trusted:
            return _from_upstream(data, path)
        raise CheckpointError(
            f"`{path}` is not a torchmanager checkpoint: its dict has no `format` marker {FORMAT!r}; read it with "
            f"`torch.load`, or pass `trusted=True` for an upstream torchmanager checkpoint you trust. Received: path={path!r}"
        )
    version = data.get("format_version")
    if type(version) is not int:
        raise CheckpointError(
            f"Checkpoint `{path}` has no valid `format_version` (an int); the file is corrupt. "
            f"Received: format_version={version!r}"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint `{path}` has format version {version} (written by torchmanager "
            f"{data.get('torchmanager_version')}), newer than format version {FORMAT_VERSION} that this torchmanager "
            f"{__version__} reads; upgrade torchmanager to load it. Received: format_version={version}"
        )
    return data


def _from_upstream(data: dict[str, Any], path: str) -> dict[str, Any]:
    """An upstream 1.5 checkpoint in our format (with our markers); another dict as it is."""
    from . import upstream

    if not upstream.is_upstream_checkpoint(data):
        return data
    try:
        payload = upstream.to_payload(data)
    except TypeError as error:
        raise CheckpointError(
            f"`{path}` is an upstream torchmanager checkpoint that cannot be read: {error}"
        ) from error
    return {**payload, "format": FORMAT, "format_version": FORMAT_VERSION, "torchmanager_version": __version__}


def list_checkpoints(experiment_dir: str | os.PathLike[str]) -> list[str]:
    """The names of the checkpoint files (`*.model`) in an experiment's `checkpoints` folder (upstream's helper)."""
    folder = os.path.join(os.fspath(experiment_dir), "checkpoints")
    return sorted(name for name in os.listdir(folder) if name.endswith(".model"))


def pack_model(model: torch.nn.Module) -> torch.Tensor:
    """Pickle the structure of `model` without its weights, as a uint8 tensor for a checkpoint payload.

    Parameters and persistent buffers are replaced by same-shaped tensors on the "meta" device (so the
    weights, stored by `state_dict()`, are not stored twice); non-persistent buffers keep their data.

    Raises:
        TypeError: `model` is not a module, or cannot be pickled (e.g. a class that is not importable).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module. Received: model={type(model).__name__}")
    in_state = {id(tensor) for tensor in model.state_dict(keep_vars=True).values()}
    memo: dict[int, Any] = {}
    for module in model.modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if id(tensor) in memo or id(tensor) not in in_state:
                continue
            empty = torch.empty_like(tensor, device="meta")
            if isinstance(tensor, torch.nn.Parameter):
                empty = torch.nn.Parameter(empty, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = empty
    skeleton = copy.deepcopy(model, memo)
    buffer = io.BytesIO()
    try:
        torch.save(skeleton, buffer)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"The structure of `model` cannot be pickled ({error}); its classes must be importable at module "
            f"level, without lambdas or local classes. Received: model={type(model).__name__}"
        ) from error
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _materialise(model: torch.nn.Module, device: torch.device) -> None:
    """Replace meta parameters and buffers by empty tensors on `device`, keeping shared (tied) tensors shared."""
    created: dict[int, torch.Tensor] = {}
    for module in model.modules():
        named: list[tuple[str, torch.Tensor]] = list(module.named_parameters(recurse=False, remove_duplicate=False))
        named += list(module.named_buffers(recurse=False, remove_duplicate=False))
        for name, tensor in named:
            if not tensor.is_meta:
                continue
            if id(tensor) not in created:
                empty = torch.empty_like(tensor, device=device)
                if isinstance(tensor, torch.nn.Parameter):
                    empty = torch.nn.Parameter(empty, requires_grad=tensor.requires_grad)
                created[id(tensor)] = empty
            setattr(module, name, created[id(tensor)])


def unpack_model(
    packed: torch.Tensor, state_dict: Mapping[str, torch.Tensor], *, map_location: str | torch.device | None = None
) -> torch.nn.Module:
    """Rebuild a model from `pack_model`'s tensor and its weights; unpickling runs code, so only for trusted files.

    Args:
        packed: The uint8 tensor from `pack_model`.
        state_dict: The model's `state_dict()`, loaded strictly.
        map_location: The device of the rebuilt model; default the device of the state dict's tensors (else CPU).
    Returns:
        The model with its weights, on the chosen device.
    Raises:
        TypeError: `packed` is not a 1-D uint8 tensor, or does not hold a module.
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        described = (
            f"{packed.dtype} tensor of shape {tuple(packed.shape)}"
            if isinstance(packed, torch.Tensor)
            else type(packed).__name__
        )
        raise TypeError(f"`packed` must be the 1-D uint8 tensor returned by `pack_model`. Received: packed={described}")
    if map_location is not None:
        device = torch.device(map_location)
    else:
        device = next(
            (value.device for value in state_dict.values() if isinstance(value, torch.Tensor)), torch.device("cpu")
        )
    data = bytes(packed.detach().cpu().clone().untyped_storage())
    model = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"`packed` must hold a torch.nn.Module from `pack_model`. Received: packed holds {type(model).__name__}"
        )
    _materialise(model, device)
    model.load_state_dict(state_dict, strict=True)
    return model


from .background import BackgroundWriter  # noqa: E402  (it writes with `_write` above)
