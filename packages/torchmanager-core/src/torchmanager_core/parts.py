"""A manager's losses and metrics: as the user gave them (`loss_fn`, `metric_fns`) and as the loop calls them.

Who owns what: the manager inherits these members; `compiled` holds how the losses and metrics are
called and read (`CompiledLoss`, `CompiledMetrics`), and the checks of what a user gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .compiled import CompiledLoss, CompiledMetrics
from .stream_checks import check_loss_fn, check_metrics, check_summary_names

__all__ = ["LossesAndMetrics"]


class LossesAndMetrics:
    """The `loss_fn` and `metric_fns` of a manager, checked when set, and their compiled forms."""

    _loss_fn: Callable[..., Any] | dict[str, Callable[..., Any]] | None
    _metric_fns: dict[str, Callable[..., Any]]
    compiled_losses: CompiledLoss | None
    compiled_metrics: CompiledMetrics

    @property
    def loss_fn(self) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
        """The loss or dict of losses; set it to change them (checked as in the constructor)."""
        return self._loss_fn

    @loss_fn.setter
    def loss_fn(self, loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None) -> None:
        checked = check_loss_fn(loss_fn)
        check_summary_names(checked, self._metric_fns)
        self._loss_fn = checked
        self.compiled_losses = CompiledLoss(self._loss_fn) if self._loss_fn is not None else None

    @property
    def metric_fns(self) -> dict[str, Callable[..., Any]]:
        """The metrics by name; set it, or change the dict, to change them (checked when a pass starts)."""
        return self._metric_fns

    @metric_fns.setter
    def metric_fns(self, metrics: Mapping[str, Callable[..., Any]] | None) -> None:
        checked = check_metrics(metrics)
        check_summary_names(self._loss_fn, checked)
        self._metric_fns = checked
        self.compiled_metrics = CompiledMetrics(self._metric_fns)

    def _stream_objects(self) -> Iterator[Any]:
        """Every loss and metric."""
        if self.compiled_losses is not None:
            yield from self.compiled_losses.fns.values()
        yield from self.compiled_metrics.fns.values()

    def _stream_modules(self) -> Iterator[torch.nn.Module]:
        """The losses and metrics that are modules (moved with the model, put in eval mode with it)."""
        return (fn for fn in self._stream_objects() if isinstance(fn, torch.nn.Module))

    def _sync_streams(self) -> None:
        """Follow changes made to the `metric_fns` or `loss_fn` dicts in place (once per pass, never per step)."""
        if not self.compiled_metrics.holds(self._metric_fns):
            self.metric_fns = dict(self._metric_fns)
        if isinstance(self._loss_fn, dict) and self.compiled_losses is not None:
            if not self.compiled_losses.holds(self._loss_fn):
                self.loss_fn = dict(self._loss_fn)
