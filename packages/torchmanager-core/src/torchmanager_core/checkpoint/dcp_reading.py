"""Reading a `torch.distributed.checkpoint` folder without running code from it.

Who owns what: `sharded` writes and reads torchmanager's sharded checkpoints; this module gives DCP
the reader and planner that make its load safe. DCP (torch 2.13) unpickles its index (`.metadata`)
with `pickle.load` and every non-tensor value with `torch.load(weights_only=False)`; tensors it reads
with `weights_only`. Here the index is read by an unpickler that builds DCP's metadata classes and
nothing else, and the values with `weights_only`.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from . import CheckpointError

__all__ = ["SafePlanner", "SafeReader"]

_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
        "StorageMeta",
        "MetadataIndex",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}
"""The only globals DCP's `.metadata` pickle may name (torch 2.13 writes these); dtypes are allowed too."""


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata records and nothing else: any other global in the file is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not DCP metadata")


class SafeReader(FileSystemReader):
    """DCP's file reader with its index read by `_MetadataUnpickler` (DCP itself unpickles it in full), once."""

    _metadata: Metadata | None = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if self._metadata is None:
            self._metadata = self._read_metadata()
        return self._metadata

    def _read_metadata(self) -> Metadata:
        path = os.path.join(os.fspath(self.path), ".metadata")
        try:
            with open(path, "rb") as file:
                metadata = _MetadataUnpickler(file).load()
        except FileNotFoundError as error:
            raise CheckpointError(
                f"Sharded checkpoint `{self.path}` has no `.metadata`; the folder is not a complete checkpoint. "
                f"Received: path={os.fspath(self.path)!r}"
            ) from error
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"The index `{path}` of a sharded checkpoint names Python objects other than DCP's metadata ({error}), "
                f"and loading them could run code from the file; it was refused. Received: path={path!r}"
            ) from error
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"`{path}` is not DCP metadata. Received: {type(metadata).__name__}")
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """DCP's load planner reading non-tensor values with `weights_only` (DCP itself unpickles them in full)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        data = value.getvalue()
        try:
            torch.load(io.BytesIO(data), weights_only=True)  # the same bytes, refused if they need code
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"The value `{read_item.dest_index.fqn}` of a sharded checkpoint holds Python objects, and loading "
                "them would run code from the file; it was refused. Keep tensors, numbers, str and containers of "
                f"them in checkpoints. Received: key={read_item.dest_index.fqn!r}"
            ) from error
        super().load_bytes(read_item, io.BytesIO(data))
