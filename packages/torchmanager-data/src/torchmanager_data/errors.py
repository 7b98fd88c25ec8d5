"""Errors raised by torchmanager-data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LoaderTimeoutError", "TransformError"]


def _describe(fn: Callable[..., Any]) -> str:
    """A short name for a transform: a function's qualified name, else its class name."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__name__


class TransformError(RuntimeError):
    """A preprocessing transform failed on one item; the original exception is the `__cause__`.

    The constructor takes the message alone so that a `DataLoader` worker's copy is re-raised in
    the main process as a `TransformError` too (torch rebuilds worker exceptions from their text;
    there the attributes are None and the message holds the worker's traceback).

    Attributes:
        index: The index of the item whose preprocessing failed.
        position: The position of the failing transform in `transforms` (0-based).
        transform: The failing transform.
    """

    def __init__(
        self,
        message: str,
        *,
        index: object = None,
        position: int | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.position = position
        self.transform = transform

    @classmethod
    def caught(
        cls, index: object, position: int, transform: Callable[..., Any], cause: BaseException
    ) -> TransformError:
        """The error for `transform`, at `position` in the list, failing on item `index` with `cause`."""
        return cls(
            f"Transform #{position} `{_describe(transform)}` failed on the item at index {index!r}: "
            f"{type(cause).__name__}: {cause}",
            index=index,
            position=position,
            transform=transform,
        )


class LoaderTimeoutError(RuntimeError):
    """A batch took longer than the data set's `timeout` to come from its loader processes (one is stuck)."""
