"""`LambdaCallback` and the `on_*` decorators: plain functions called at batch or epoch boundaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from torchmanager_core.callbacks import Callback
from torchmanager_core.tracking import merge_summaries

from ._hooks import select_hooks
from .frequency import Frequency, check_frequency

__all__ = ["LambdaCallback", "on_batch_end", "on_batch_start", "on_epoch_end", "on_epoch_start"]

PreCallbackFn: TypeAlias = Callable[[int], None]
"""Called with the batch or epoch index before it starts."""

PostCallbackFn: TypeAlias = Callable[[int, dict[str, Any]], None]
"""Called with the batch or epoch index and its summary after it ends."""


def _check_fn(fn: object, name: str) -> None:
    if fn is not None and not callable(fn):
        raise TypeError(f"`{name}` must be a function or None. Received: {name}={fn!r}")


class LambdaCallback(Callback):
    """Calls `pre_fn(index)` before and `post_fn(index, summary)` after every batch or epoch.

    At epoch frequency `summary` holds the training values and the validation values prefixed
    with "val_" (a new dict each epoch). At batch frequency it is the step's summary, whose values
    may be device tensors: reading them (`float(v)`) waits for the device, so only do it when needed.
    Only the hooks it uses are called by the loop.

    Args:
        pre_fn: Called with the index before each batch or epoch, or None.
        post_fn: Called with the index and summary after each batch or epoch, or None.
        freq: `Frequency.BATCH` or `Frequency.EPOCH`.
    Raises:
        TypeError: A function is not callable, or `freq` is not a `Frequency`.
        ValueError: `freq` is a start frequency.
    """

    def __init__(
        self,
        pre_fn: PreCallbackFn | None = None,
        post_fn: PostCallbackFn | None = None,
        *,
        freq: Frequency = Frequency.EPOCH,
    ) -> None:
        super().__init__()
        _check_fn(pre_fn, "pre_fn")
        _check_fn(post_fn, "post_fn")
        self._freq = check_frequency(freq, (Frequency.BATCH, Frequency.EPOCH))
        self._pre_fn = pre_fn
        self._post_fn = post_fn
        self._select()

    def _select(self) -> None:
        batch = self._freq is Frequency.BATCH
        used = {
            "on_batch_start": batch and self._pre_fn is not None,
            "on_batch_end": batch and self._post_fn is not None,
            "on_epoch_start": not batch and self._pre_fn is not None,
            "on_epoch_end": not batch and self._post_fn is not None,
        }
        select_hooks(self, LambdaCallback, {hook for hook, use in used.items() if not use})

    @property
    def freq(self) -> Frequency:
        """`Frequency.BATCH` or `Frequency.EPOCH`."""
        return self._freq

    @freq.setter
    def freq(self, freq: Frequency) -> None:
        self._freq = check_frequency(freq, (Frequency.BATCH, Frequency.EPOCH))
        self._select()

    @property
    def pre_callback_fn(self) -> PreCallbackFn | None:
        """The function called before each batch or epoch."""
        return self._pre_fn

    @pre_callback_fn.setter
    def pre_callback_fn(self, fn: PreCallbackFn | None) -> None:
        _check_fn(fn, "pre_callback_fn")
        self._pre_fn = fn
        self._select()

    @property
    def post_callback_fn(self) -> PostCallbackFn | None:
        """The function called after each batch or epoch."""
        return self._post_fn

    @post_callback_fn.setter
    def post_callback_fn(self, fn: PostCallbackFn | None) -> None:
        _check_fn(fn, "post_callback_fn")
        self._post_fn = fn
        self._select()

    def on_batch_start(self, batch: int) -> None:
        if self._freq is Frequency.BATCH and self._pre_fn is not None:
            self._pre_fn(batch)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self._freq is Frequency.BATCH and self._post_fn is not None:
            self._post_fn(batch, dict(summary))

    def on_epoch_start(self, epoch: int) -> None:
        if self._freq is Frequency.EPOCH and self._pre_fn is not None:
            self._pre_fn(epoch)

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if self._freq is Frequency.EPOCH and self._post_fn is not None:
            self._post_fn(epoch, merge_summaries(summary, val_summary))


def on_batch_start(fn: PreCallbackFn) -> LambdaCallback:
    """Decorate `fn(batch_index)` into a callback called before every batch."""
    return LambdaCallback(pre_fn=fn, freq=Frequency.BATCH)


def on_batch_end(fn: PostCallbackFn) -> LambdaCallback:
    """Decorate `fn(batch_index, batch_summary)` into a callback called after every batch."""
    return LambdaCallback(post_fn=fn, freq=Frequency.BATCH)


def on_epoch_start(fn: PreCallbackFn) -> LambdaCallback:
    """Decorate `fn(epoch_index)` into a callback called before every epoch."""
    return LambdaCallback(pre_fn=fn, freq=Frequency.EPOCH)


def on_epoch_end(fn: PostCallbackFn) -> LambdaCallback:
    """Decorate `fn(epoch_index, epoch_summary)` into a callback called after every epoch (val_ keys included)."""
    return LambdaCallback(post_fn=fn, freq=Frequency.EPOCH)
