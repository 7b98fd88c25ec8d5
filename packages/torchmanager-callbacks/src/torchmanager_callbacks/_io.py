"""Shared file helpers: which process writes, and checking an output path when a callback is created."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchmanager_core import checkpoint as core_checkpoint
from torchmanager_core.distributed import is_main_process

__all__ = ["check_output_path", "configs_dict", "is_writer"]


def is_writer() -> bool:
    """Whether this process writes files: rank 0 of a process group, or of a `torchrun` launch not yet initialised."""
    return is_main_process() and os.environ.get("RANK", "0") == "0"


def check_output_path(
    path: str | os.PathLike[str], name: str, error: type[Exception] = ValueError, *, checkpoint: bool = False
) -> str:
    """Create the folder of the file `path` if needed and check that it is writable (on the writing process only).

    Args:
        path: The file a callback will write.
        name: The argument name, for the message.
        error: The exception type to raise.
        checkpoint: `path` is a checkpoint's: it may be the folder of a sharded one (FSDP2's).
    Returns:
        `path` as a normalised str.
    Raises:
        error: `path` is a folder (but a sharded checkpoint's), or its folder cannot be created or written.
    """
    path = os.path.normpath(os.fspath(path))
    if os.path.isdir(path) and not (checkpoint and core_checkpoint.is_sharded_folder(path)):
        raise error(f"`{name}` must be the path of a file, not of a folder. Received: {name}={path!r}")
    if not is_writer():
        return path  # the other processes of a torchrun launch never write: they create nothing
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
        reason = "permission denied"
    except OSError as caught:
        writable, reason = False, caught.strerror or type(caught).__name__
    if not writable:
        raise error(
            f"`{name}` must be in a folder that can be created and written, but `{folder}` cannot ({reason}); "
            f"choose another path. Received: {name}={path!r}"
        )
    return path


def configs_dict(configs: Any) -> Any:
    """A run's configs as a dict: its `to_dict()`, a mapping as it is, else `vars()` (an argparse Namespace)."""
    if callable(getattr(configs, "to_dict", None)):
        return configs.to_dict()
    return dict(configs) if isinstance(configs, Mapping) else vars(configs)
