"""The small protocols through which the managers talk to losses and metrics.

Core never imports the metrics or losses distributions: a loss is any callable returning a
scalar tensor, a metric any callable with `reset()` and a `result` (or torchmetrics' `compute()`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LossFn", "MetricFn", "Resulting", "has_state", "read_result"]

LossFn = Callable[[Any, Any], torch.Tensor]
"""A loss: `fn(model_output, label)` returning a scalar tensor with grad."""

MetricFn = Callable[[Any, Any], Any]
"""A metric: `fn(model_output, label)`, updating its own state, with `reset()` and `result`."""


@runtime_checkable
class Resulting(Protocol):
    """A streaming function that keeps its own state: `reset()` forgets it, `result` reads it."""

    def reset(self) -> None: ...

    @property
    def result(self) -> torch.Tensor: ...


def has_state(fn: object) -> bool:
    """Whether `fn` keeps its own streaming state (`reset()` and `result` or `compute()`)."""
    return callable(getattr(fn, "reset", None)) and (hasattr(type(fn), "result") or callable(getattr(fn, "compute", None)))


def read_result(fn: object) -> torch.Tensor:
    """The epoch value of a stateful function: `fn.result`, else torchmetrics' `fn.compute()`."""
    if hasattr(type(fn), "result"):
        return fn.result  # type: ignore[attr-defined, no-any-return]
    return fn.compute()  # type: ignore[attr-defined, no-any-return]
