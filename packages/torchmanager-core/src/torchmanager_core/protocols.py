"""The small protocols through which the managers talk to losses and metrics.

Core never imports the metrics or losses distributions: a loss is any callable returning a
scalar tensor, a metric any callable with `reset()` and a `result` (or torchmetrics' `compute()`).
The structural protocols below them keep upstream torchmanager 1.5's names, for code that
annotates with them or checks `isinstance(x, DeviceMovable)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import torch

from .version import Version

__all__ = [
    "CkptConvertable",
    "DataParallelType",
    "DataParallelable",
    "DeviceMovable",
    "Frequency",
    "LossFn",
    "LrSteping",
    "MetricFn",
    "ModelContainer",
    "MonitorType",
    "Resulting",
    "StateDictLoadable",
    "Steppable",
    "SummaryWritable",
    "SummaryWriteble",
    "Trainable",
    "VerboseControllable",
    "Version",
    "Weighted",
    "WrappedFn",
    "has_state",
    "read_result",
]


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


# -- upstream 1.5's structural protocols -----------------------------------------------------------


@runtime_checkable
class DeviceMovable(Protocol):
    """Anything with `.to(device)`; `devices.move_to_device` moves such objects inside a batch."""

    def to(self, device: torch.device) -> Any: ...


class DataParallelType(Protocol):
    """A wrapper class such as `torch.nn.DataParallel`: built from a module, device ids and an output device."""

    def __init__(
        self, module: Any, device_ids: list[int] | None = None, output_device: torch.device | None = None
    ) -> None: ...


class DataParallelable(Protocol):
    """An object that wraps its own modules for several devices and says whether it did."""

    def data_parallel(self, target_devices: list[torch.device]) -> bool: ...


class StateDictLoadable(Protocol):
    """An object with `state_dict()` and `load_state_dict(...)` (modules, optimizers, schedulers)."""

    def load_state_dict(self, state_dict: Mapping[str, Any], /) -> Any: ...

    def state_dict(self) -> Mapping[str, Any]: ...


@runtime_checkable
class CkptConvertable(Protocol):
    """An object that makes its own checkpoint (upstream's managers)."""

    def to_checkpoint(self) -> Any: ...


@runtime_checkable
class ModelContainer(Protocol):
    """An object holding a model with its optimizer, loss and metrics, as a manager does."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    loss_fn: Any
    metric_fns: dict[str, Any]


@runtime_checkable
class WrappedFn(Protocol):
    """A loss or metric made from a plain function by upstream's `loss_fn`/`metric_fn` decorators."""

    @property
    def wrapped_metric_fn(self) -> Callable[[Any, Any], torch.Tensor]: ...


class Steppable(Protocol):
    """An object that steps, such as an optimizer or a learning-rate scheduler."""

    def step(self, *args: Any, **kwargs: Any) -> Any: ...


class LrSteping(Steppable, Protocol):
    """A learning-rate scheduler (upstream's spelling)."""

    def get_last_lr(self) -> list[float]: ...


class Trainable(Protocol):
    """An object with training and evaluation modes, such as a module."""

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


class SummaryWritable(Protocol):
    """A writer of grouped scalars, such as `torch.utils.tensorboard.SummaryWriter`."""

    def add_scalars(self, main_tag: str, tag_scalar_dict: dict[str, float], global_step: int | None = None) -> None: ...


SummaryWriteble = SummaryWritable
"""Upstream's spelling of `SummaryWritable`."""


@runtime_checkable
class Weighted(Protocol):
    """Anything with a settable `weight`, such as `torchmanager_losses.Loss`."""

    weight: Any


@runtime_checkable
class VerboseControllable(Protocol):
    """An object whose output a `verbose` flag switches on and off."""

    verbose: bool
