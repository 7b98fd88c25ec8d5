"""What the loop sees of a manager: a small protocol, so that `loop/` never imports the manager's module."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import torch

from ..compiled import CompiledLoss, CompiledMetrics
from ..epoch_values import EpochValues
from ..precision import Precision
from ..strategy import Strategy, StrategyOption
from .run import Run

__all__ = ["ManagerLike"]


class ManagerLike(Protocol):
    """The manager's parts, extension points and run state that the loop reads and calls."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    _optimizer_factory: Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer] | None
    compiled_losses: CompiledLoss | None
    compiled_metrics: CompiledMetrics
    accumulate_grad_batches: int
    clip_grad_norm: float | None
    clip_grad_value: float | None
    _run: Run
    _precision: Precision
    _precision_option: str
    _strategy: Strategy | None
    _strategy_option: StrategyOption
    _compile: bool | Mapping[str, Any]
    _training: EpochValues
    _evaluation: EpochValues
    _passes: list[EpochValues]
    _last_values: EpochValues
    _dispatch: Any  # the `Dispatch` of the `fit` in progress, else None
    _plan: Any  # the `Plan` of the `fit` in progress, else None

    @property
    def raw_model(self) -> torch.nn.Module: ...

    @property
    def _run_device(self) -> torch.device: ...

    def to(self, device: torch.device) -> None: ...

    def unpack_data(self, data: Any) -> tuple[Any, Any]: ...

    def forward(self, input: Any, target: Any = None) -> tuple[Any, torch.Tensor | None]: ...

    def train_step(self, x_train: Any, y_train: Any) -> Mapping[str, Any]: ...

    def _counting_train_step(self, x_train: Any, y_train: Any) -> Mapping[str, Any]: ...

    def test_step(self, x_test: Any, y_test: Any) -> Mapping[str, Any]: ...

    def _train(
        self, dataset: Iterable[Any], /, iterations: int | None = None, *args: Any, **kwargs: Any
    ) -> dict[str, float]: ...

    def _stream_modules(self) -> Iterable[torch.nn.Module]: ...

    def _stream_objects(self) -> Iterable[Any]: ...

    def _sync_streams(self) -> None: ...
