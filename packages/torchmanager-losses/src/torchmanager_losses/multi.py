"""Losses made of other losses: `MultiLosses` (a weighted sum) and `ParallelLoss` (DataParallel)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from torchmanager_metrics.metric import Metric, at_least_float32, overrides

from .loss import Loss

__all__ = ["MultiLosses", "ParallelLoss"]


class MultiLosses(Loss):
    """The sum of several weighted losses, each recording its own epoch mean.

    A call runs every part on the batch (each picks its own `target` and applies its own
    `weight`, so each part's `result` is its share) and returns `weight * sum(parts)`; the
    total's `result` is `weight` times the sum of the parts' results, each exact over its own
    denominator (elements a cross entropy did not ignore, a regression's elements). The sum is
    taken in float32 or wider. A subclass replacing `forward` makes the total that `forward`'s
    value: a call then records it alone (the parts record nothing).

    Args:
        losses: The `Loss` instances to add up (at least one).
        target: Optional key picked from dict outputs and labels before the parts pick theirs.
        weight: Finite, non-negative coefficient applied to the total.

    Raises:
        TypeError: An element of `losses` is not a `Loss`.
        ValueError: `losses` is empty.
    """

    def __init__(self, losses: Iterable[Loss], target: str | None = None, weight: float = 1) -> None:
        super().__init__(target=target, weight=weight)
        parts = list(losses)
        if not parts:
            raise ValueError("`losses` must hold at least one Loss. Received: losses=[]")
        for index, part in enumerate(parts):
            if not isinstance(part, Loss):
                raise TypeError(
                    "Every element of `losses` must be a torchmanager_losses.Loss (wrap a plain function with "
                    f"`Loss(fn)`). Received: losses[{index}]={part!r}"
                )
        self._losses = torch.nn.ModuleList(parts)
        self._fused = not overrides(self, MultiLosses, "forward")  # else the subclass's forward is the total

    @property
    def losses(self) -> torch.nn.ModuleList:
        """The parts, in order."""
        return self._losses

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        """The unweighted sum of the parts' weighted losses, without touching any state."""
        return _total(part.evaluate(input, target) for part in self._parts())

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Update every part with the batch, then record and return the weighted total."""
        if not self._fused:
            return super().update(input, target)
        return self.weigh(_total(part(input, target) for part in self._parts()))

    def compute(self) -> torch.Tensor:
        """`weight` times the sum of the parts' epoch values (each the mean over its own denominator).

        A subclass replacing `forward` reads its own running mean instead.
        """
        if not self._fused:
            return super().compute()
        total = _total(part.compute() for part in self._parts())
        return total if self._weight == 1 else total * self._weight

    def reset(self) -> None:
        """Forget every batch, in the total and in each part."""
        for part in self._parts():
            part.reset()
        super().reset()

    def merge_state(self, other: Metric) -> None:
        """Fold another `MultiLosses`' state in, part by part."""
        if not isinstance(other, MultiLosses) or len(other.losses) != len(self._losses):
            raise TypeError(
                f"Cannot merge {other!r} into a MultiLosses of {len(self._losses)} parts: it needs the same parts."
            )
        for mine, theirs in zip(self._parts(), other._parts()):
            mine.merge_state(theirs)
        super().merge_state(other)

    def _parts(self) -> list[Loss]:
        return [part for part in self._losses if isinstance(part, Loss)]


class ParallelLoss(Loss):
    """A loss computed on several GPUs with `torch.nn.DataParallel`, batch split along `dim`.

    Each replica computes the wrapped loss's weighted value (`module.evaluate`) on its chunk;
    the returned loss is the mean over replicas, recorded in this object's state (the wrapped
    `module` keeps no state here). `target` and `weight` are those of `module`. On a machine
    without visible GPUs DataParallel calls the module directly. Prefer `torchrun` with one
    process per device.

    Args:
        module: The `Loss` to parallelise.
        device_ids: CUDA devices to use (default all visible).
        output_device: Device receiving the per-replica losses (default `device_ids[0]`).
        dim: The batch dimension to split.
        parallel_type: The DataParallel class to build.
    """

    def __init__(
        self,
        module: Loss,
        device_ids: list[int] | None = None,
        output_device: torch.device | int | None = None,
        dim: int = 0,
        *,
        parallel_type: type[torch.nn.DataParallel[Any]] = torch.nn.DataParallel,
    ) -> None:
        if not isinstance(module, Loss):
            raise TypeError(f"`module` must be a torchmanager_losses.Loss. Received: module={module!r}")
        super().__init__(target=None, weight=1)
        self.module = module
        self.parallel = parallel_type(_Evaluate(module), device_ids, output_device, dim=dim)

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        """The mean over replicas of the wrapped loss's weighted value."""
        values: torch.Tensor = self.parallel(input, target)
        return values.mean()

    def reset(self) -> None:
        """Forget every batch, here and in the wrapped module."""
        self.module.reset()
        super().reset()


class _Evaluate(torch.nn.Module):
    """Adapter giving DataParallel a stateless module: the wrapped loss's weighted value, as shape (1,)."""

    def __init__(self, loss: Loss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        return self.loss.evaluate(input, target).reshape(1)


def _total(values: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of the parts' losses, in float32 or wider (parts may be bfloat16 or float16)."""
    iterator = iter(values)
    total = at_least_float32(next(iterator))
    for value in iterator:
        total = total + value
    return total
