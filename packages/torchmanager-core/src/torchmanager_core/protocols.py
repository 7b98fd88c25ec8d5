"""The small protocols through which the managers talk to losses and metrics.

Core never imports the metrics or losses distributions: a loss is any callable returning a
scalar tensor, a metric any callable with `reset()` and a `result` (or torchmetrics' `compute()`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Frequency", "LossFn", "MetricFn", "MonitorType", "Resulting", "has_state", "read_result"]


class Frequency(Enum):
    """When a frequency callback steps (upstream's values; the callbacks distribution uses it)."""

    EPOCH = 0
    EPOCH_START = -1
    BATCH = 1
    BATCH_START = 2


class MonitorType(Enum):
    """Whether the best value of a monitored metric is its minimum or its maximum."""

    MIN = 0
    MAX = 1

    @property
    def init_score(self) -> float:
        """The value every real value improves on: +inf for MIN, -inf for MAX (upstream started MAX at -1)."""
        return math.inf if self is MonitorType.MIN else -math.inf


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
    return callable(getattr(fn, "reset", None)) and (
        hasattr(type(fn), "result") or callable(getattr(fn, "compute", None))
    )


def read_result(fn: object) -> torch.Tensor:
    """The epoch value of a stateful function: `fn.result`, else torchmetrics' `fn.compute()`."""
    if hasattr(type(fn), "result"):
        return fn.result  # type: ignore[attr-defined, no-any-return]
    return fn.compute()  # type: ignore[attr-defined, no-any-return]
