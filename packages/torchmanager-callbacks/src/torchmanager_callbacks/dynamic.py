"""`DynamicWeight` and `LambdaDynamicWeight`: change a loss's `weight` as training goes on."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

from torchmanager_core.protocols import SummaryWritable, Weighted

from .frequency import Frequency, FrequencyCallback

__all__ = ["DynamicWeight", "LambdaDynamicWeight", "SummaryWritable", "Weighted"]


class DynamicWeight(FrequencyCallback, abc.ABC):
    """Sets `weighted.weight` to the result of `step` at the chosen frequency.

    With `Frequency.EPOCH_START` the weight of epoch `e` is `step()` with `current_step == e`; with
    `Frequency.EPOCH` (upstream's default) the weight is updated after each epoch, for the next one.

    Args:
        weighted: The object whose `weight` changes (a loss).
        freq: When to update the weight.
        writer: Optional writer receiving the weight after each epoch, under `name`.
        name: The tag of the weight; default "<class of weighted>.weight".
    Raises:
        TypeError: `weighted` has no `weight` attribute.
    """

    reads_batch_summary = False  # the weight is a function of the step, not of the batch values

    def __init__(
        self,
        weighted: Weighted,
        freq: Frequency = Frequency.EPOCH,
        writer: SummaryWritable | None = None,
        name: str | None = None,
    ) -> None:
        if not hasattr(weighted, "weight"):
            raise TypeError(
                f"`weighted` must have a `weight` attribute to set (e.g. a torchmanager loss). Received: weighted={weighted!r}"
            )
        super().__init__(freq=freq)
        self._weighted = weighted
        self._writer = writer
        self._key = f"{type(weighted).__name__}.weight" if name is None else name

    def _update(self, result: Any) -> None:
        self._weighted.weight = result

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        weight = self._weighted.weight
        if self._writer is not None and isinstance(weight, (int, float)):
            self._writer.add_scalars(self._key, {"train": float(weight)}, epoch + 1)
        super().on_epoch_end(epoch, summary, val_summary)


class LambdaDynamicWeight(DynamicWeight):
    """A `DynamicWeight` whose weight is `fn(current_step)`.

    Args:
        fn: The weight as a function of the step (epoch or batch index).
        weighted: The object whose `weight` changes (a loss).
        freq: When to update the weight.
        writer: Optional writer receiving the weight after each epoch.
        name: The tag of the weight.
    Raises:
        TypeError: `fn` is not callable, or `weighted` has no `weight`.
    """

    def __init__(
        self,
        fn: Callable[[int], Any],
        weighted: Weighted,
        freq: Frequency = Frequency.EPOCH,
        writer: SummaryWritable | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be a function of the step index. Received: fn={fn!r}")
        self._fn = fn
        super().__init__(weighted, freq, writer, name)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self.current_step)
