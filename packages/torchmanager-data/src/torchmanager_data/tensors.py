"""`TensorSlices`: the `Dataset` that `Dataset.from_tensor_slices` makes from tensors held in memory.

Item `i` is every tensor's row `i`, in the structure the tensors were given in (a tensor, a
tuple or list, a dict, nested), as Keras's `tf.data.Dataset.from_tensor_slices` slices them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import torch

from .dataset import Dataset

__all__ = ["ArrayLike", "Slices", "TensorSlices"]


class ArrayLike(Protocol):
    """What `torch.as_tensor` takes without copying: a NumPy array, for one."""

    def __array__(self) -> Any: ...


Slices: TypeAlias = "torch.Tensor | ArrayLike | Sequence[Slices] | Mapping[str, Slices]"
"""A tensor (or NumPy array) of shape (N, ...), or a tuple, list or dict of them, nested at will."""


class TensorSlices(Dataset[Any]):
    """In-memory tensors sliced along their first dimension, batched by `Dataset`.

    Made by `Dataset.from_tensor_slices` (see there for the arguments). The tensors are kept as
    given (NumPy arrays become tensors sharing their memory); an item is a view of their rows.
    """

    seed_items = False  # a row draws no random numbers

    def __init__(self, data: Slices, batch_size: int, **options: Any) -> None:
        """`options`: `Dataset`'s loading options, as `Dataset.from_tensor_slices` checked and passed them."""
        self.data = _as_tensors(data, "data")
        lengths = dict(_leaf_lengths(self.data, "data"))
        if len(set(lengths.values())) != 1:
            received = ", ".join(f"{where}={length}" for where, length in lengths.items())
            raise ValueError(
                "Every tensor of `data` must have the same first dimension: row i of each makes item i. "
                f"Received: first dimensions {received}"
            )
        self._length = next(iter(lengths.values()))
        super().__init__(batch_size, **options)

    @property
    def unbatched_len(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        return _slice(self.data, index)

    def __repr__(self) -> str:
        return (
            f"Dataset.from_tensor_slices(<{self._length} items>, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def _as_tensors(data: Any, where: str) -> Any:
    """`data` with NumPy arrays made tensors; raises TypeError (naming the path) on any other leaf."""
    if isinstance(data, torch.Tensor):
        if data.ndim == 0:
            raise ValueError(
                f"Each tensor of `data` needs a first dimension to slice (one row per item). Received: {where} "
                "of shape ()"
            )
        return data
    if isinstance(data, Mapping) and data:
        return {key: _as_tensors(value, f"{where}[{key!r}]") for key, value in data.items()}
    if isinstance(data, (tuple, list)) and data:
        return type(data)(_as_tensors(value, f"{where}[{i}]") for i, value in enumerate(data))
    if hasattr(data, "__array__") and not isinstance(data, (str, bytes)):
        return _as_tensors(torch.as_tensor(data), where)
    raise TypeError(
        "`data` must be a tensor or NumPy array of shape (N, ...), or a non-empty tuple, list or dict of them. "
        f"Received: {where}={type(data).__name__}{' (empty)' if isinstance(data, (Mapping, tuple, list)) else ''}"
    )


def _leaf_lengths(data: Any, where: str) -> Iterable[tuple[str, int]]:
    """(path, first dimension) of every tensor in `data`."""
    if isinstance(data, torch.Tensor):
        yield where, len(data)
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _leaf_lengths(value, f"{where}[{key!r}]")
    else:
        for i, value in enumerate(data):
            yield from _leaf_lengths(value, f"{where}[{i}]")


def _slice(data: Any, index: int) -> Any:
    """Row `index` of every tensor in `data`, in `data`'s structure."""
    if isinstance(data, torch.Tensor):
        return data[index]
    if isinstance(data, Mapping):
        return {key: _slice(value, index) for key, value in data.items()}
    return type(data)(_slice(value, index) for value in data)
