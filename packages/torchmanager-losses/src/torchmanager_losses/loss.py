"""The `Loss` base class: a `Metric` whose call returns the weighted loss with its gradient.

Who owns what: `torchmanager_metrics.metric` owns the state machinery (target selection, the
sample-weighted running mean, reset, merging); this module adds the loss weight, the scalar
check and the `loss`/`loss_fn` decorators. Combinations of losses live in `multi`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from torchmanager_metrics.metric import Metric, MetricFn, at_least_float32, batch_size

__all__ = ["BaseLoss", "Loss", "LossFn", "averaged_elements", "check_non_negative", "loss", "loss_fn"]

LossFn = MetricFn
"""A function of `(input, target)` returning a scalar loss tensor."""


def check_non_negative(name: str, value: float) -> float:
    """Return `value` as a float, or raise if it is not a finite, non-negative real number.

    Raises:
        TypeError: `value` is not a real number (bools are refused too).
        ValueError: `value` is negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a finite, non-negative float. Received: {name}={value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite, non-negative float. Received: {name}={value!r}")
    return float(value)


def averaged_elements(input: Any, target: Any, mean: bool) -> int:
    """An element-wise loss's denominator: `input.numel()` when it averages its elements, else the batch size."""
    if mean and isinstance(input, torch.Tensor):
        return input.numel()
    return batch_size(input, target)


class Loss(Metric):
    """A loss to call on each batch: returns the weighted scalar loss, records it for the epoch.

    `loss(input, target)` picks the `target` entry of dict outputs and labels, computes the batch
    loss with `forward` (or `loss_fn`), multiplies it by `weight` and adds it to a running mean
    weighted by each batch's `denominator`, so `result` is the epoch mean of the weighted loss,
    the value one call on the whole data set would give (the parts of a `MultiLosses` add up to
    its total). The returned tensor keeps its gradient.

    A batch loss that is a mean is a sum over some terms divided by their count (or, with class
    weights, their total weight); the epoch value divides the batches' sums by the total of
    their denominators: `sum_b(value_b * d_b) / sum_b(d_b)`. By default `d_b` is the batch's
    number of samples; element-wise losses use the number of elements they average, and cross
    entropy the elements it did not ignore, weighted by their class weight, as torch divides by.
    The `count` state is that total of denominators, a float32 like the running sum (integers in
    it are exact up to 2**24; past that each batch adds a relative rounding of at most 2**-24).

    Args:
        loss_fn: Optional function of `(input, target)` giving the scalar batch loss (a torch
            loss module works); without it, a subclass overrides `forward`.
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the loss.
    """

    def __init__(self, loss_fn: LossFn | None = None, target: str | None = None, weight: float = 1) -> None:
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable as fn(input, target). Received: loss_fn={loss_fn!r}")
        super().__init__(loss_fn, target=target)
        self.add_state("count", torch.zeros(()), "sum")  # a float: denominators may be class weights
        self.weight = weight

    @property
    def weight(self) -> float:
        """The coefficient multiplying this loss, a finite float >= 0."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        self._weight = check_non_negative("weight", value)

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        """The unweighted batch loss, without touching the state. Override it, or pass `loss_fn`."""
        if self._metric_fn is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no `loss_fn`: pass one to the constructor or override `forward`."
            )
        return self._metric_fn(input, target)  # a module's hooks and `__call__` are the user's: call it whole

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Add the weighted batch loss to the epoch mean and return it, gradient attached."""
        value = self.weigh(self.forward(input, target))
        self.accumulate(value, self.denominator(input, target))
        return value

    def denominator(self, input: Any, target: Any) -> int:
        """The batch loss's weight in the epoch mean: what `forward`'s mean divides by.

        By default the number of samples (the first dimension of the label, else of the input),
        right for a loss that averages one value per sample; override it with `forward` when the
        mean is over something else.
        """
        return batch_size(input, target)

    def evaluate(self, input: Any, target: Any) -> torch.Tensor:
        """The weighted loss of a batch, picking `target` like a call does, without touching the state."""
        selected_input = self._select(input, "model output")
        selected_target = self._select(target, "label")
        return self.weigh(self.forward(selected_input, selected_target))

    def weigh(self, value: torch.Tensor) -> torch.Tensor:
        """Multiply a batch loss by `weight`, checking that it is a scalar tensor.

        Raises:
            TypeError: `value` is not a tensor.
            ValueError: `value` has more than one element (the loss was not reduced).
        """
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} must compute a torch.Tensor loss. Received: loss={type(value).__name__}"
            )
        if value.numel() != 1:
            raise ValueError(
                f"{type(self).__name__} must reduce to a scalar loss (one element), e.g. with `.mean()`. "
                f"Received: loss of shape {tuple(value.shape)}"
            )
        if value.dim():
            value = value.reshape(())
        if self._weight == 1:  # skip a kernel in the common case
            return value
        return at_least_float32(value) * self._weight  # a bfloat16 product would round the weighted loss

    def extra_repr(self) -> str:
        parts = [text for text in (super().extra_repr(),) if text]
        if self._weight != 1:
            parts.append(f"weight={self._weight}")
        return ", ".join(parts)


BaseLoss = Loss
"""Upstream's name for the loss base class."""


class _FunctionLoss(Loss):
    """A loss made from a plain function by the `loss` and `loss_fn` decorators."""

    def __init__(self, fn: LossFn, target: str | None = None, weight: float = 1) -> None:
        super().__init__(fn, target=target, weight=weight)
        self.__name__ = getattr(fn, "__name__", type(self).__name__)
        self.__doc__ = getattr(fn, "__doc__", None)

    @property
    def wrapped_metric_fn(self) -> LossFn:
        """The decorated function (upstream's name; `torchmanager_core.protocols.WrappedFn` checks for it)."""
        assert self._metric_fn is not None  # set by the constructor
        return self._metric_fn


def loss(fn: LossFn) -> Loss:
    """Decorator turning `fn(input, target) -> scalar Tensor` into a `Loss`."""
    return _FunctionLoss(fn)


def loss_fn(target: str | None = None, weight: float = 1) -> Callable[[LossFn], Loss]:
    """Decorator factory: like `loss`, with a `target` key and a `weight`."""
    check_non_negative("weight", weight)

    def wrap(fn: LossFn) -> Loss:
        return _FunctionLoss(fn, target=target, weight=weight)

    return wrap
