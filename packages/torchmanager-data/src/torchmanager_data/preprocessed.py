"""`PreprocessedDataset`: a `Dataset` that loads a raw item, then runs it through transforms."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .dataset import Dataset
from .errors import TransformError

__all__ = ["PreprocessedDataset"]

T = TypeVar("T")


class PreprocessedDataset(Dataset[T], abc.ABC):
    """A `Dataset` whose items are `load(index)` passed through `transforms` in order.

    Subclasses define `unbatched_len`, `load` and `transforms`. A failing transform raises
    `TransformError` naming the item's index and the transform, chained to the original error.
    """

    @property
    @abc.abstractmethod
    def transforms(self) -> Iterable[Callable[[Any], Any]]:
        """The preprocessing functions, applied in order to each loaded item."""

    @abc.abstractmethod
    def load(self, index: int) -> Any:
        """Returns the raw item at `index`, before any transform."""

    def __getitem__(self, index: int) -> T:
        """Returns `load(index)` after every transform.

        Raises:
            TransformError: When a transform raises; the original exception is its cause.
        """
        data = self.load(index)
        for position, transform in enumerate(self.transforms):
            try:
                data = transform(data)
            except Exception as e:
                raise TransformError.caught(index, position, transform, e) from e
        return data  # type: ignore[no-any-return]
