"""The running values of a pass over data (a training epoch, a validation, a test), and how they are read.

Who owns what: the losses and metrics keep their running state in themselves (`compiled`), shared
by every pass; what a step returns beyond them is averaged here, sample-weighted, on the device.
Training and evaluation each have their own `EpochValues`. A pass that starts while another is live
(validation inside a training epoch, a `test()` called from a callback) parks the live pass's state
and gives it back when it ends (`running`), so no pass resets or refills another's accumulators.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import torch

from . import distributed
from .compiled import CompiledLoss, CompiledMetrics
from .progress import logger
from .tracking import MeanTracker, count_samples, to_floats

__all__ = ["EpochValues", "running"]

_TOTAL = frozenset({"loss"})

_warned_non_scalar: set[str] = set()


class HasStreams(Protocol):
    """What `EpochValues` reads from a manager: its compiled losses and metrics."""

    compiled_losses: CompiledLoss | None
    compiled_metrics: CompiledMetrics


class EpochValues:
    """The values of one kind of pass, read as one summary.

    A step's summary is recorded with `record`. Loss and metric values come from the losses and
    metrics themselves (exact epoch values, e.g. an IoU over the whole epoch); any other value is
    averaged over the pass, weighted by batch size. With `believe_steps=True` (a custom step), the
    loss values a step returns are the epoch's values instead of what the loss objects saw: a step
    calling `forward` twice reports what it returned. A step that returns, on every batch, the very
    loss its one `forward` made (a copy of the default step) reports the loss objects' values, as
    the default step does: the epoch value does not depend on which step ran (a cross entropy
    over tokens weighs each batch by the tokens it did not ignore, not by its samples).

    Args:
        owner: The manager whose `compiled_losses` and `compiled_metrics` this pass reads.
        training: Whether the pass trains (metrics named `val_*` run only when not).
    """

    def __init__(self, owner: HasStreams, *, training: bool) -> None:
        self.owner = owner
        self.training = training
        self._believe_steps = False
        self.counted = True  # False on a rank whose evaluation share had no batch (`evaluation_shards.join`)
        self.extras = MeanTracker()
        self._owned: set[str] | None = None  # summary names the losses and metrics report, found at the first record
        self._believed: frozenset[str] = frozenset()
        self._losses_own = True  # every believed loss value so far was the one the loss objects made
        self._loss_calls = 0  # the losses' calls when the last step was recorded

    @property
    def believe_steps(self) -> bool:
        """Whether the loss values a step returns are the epoch's (a custom step; set by the loop once per pass)."""
        return self._believe_steps

    @believe_steps.setter
    def believe_steps(self, believe: bool) -> None:
        self._believe_steps = believe
        losses = self.owner.compiled_losses
        if believe and losses is not None:
            losses.keep_last = True  # so that a step's loss can be recognised as the one the losses made

    def reset(self) -> None:
        """Forget every batch: the losses', metrics' and extra values'."""
        losses, metrics = self.owner.compiled_losses, self.owner.compiled_metrics
        if losses is not None:
            losses.reset()
        metrics.reset()
        self.extras.reset()
        self.counted = True
        self._owned = None
        self._believed = frozenset()
        self._losses_own, self._loss_calls = True, 0

    def record(self, summary: Mapping[str, Any], x: Any, y: Any) -> None:
        """Add a step's summary: values the losses and metrics do not keep are averaged, weighted by the batch size."""
        if not isinstance(summary, Mapping):
            raise TypeError(
                f"`{'train' if self.training else 'test'}_step` must return a dict of summary values (floats or "
                f"0-dim tensors). Received: {type(summary).__name__}"
            )
        if self._owned is None:
            self._owned = self._find_owned(summary)
        n = 0
        for name, value in summary.items():
            if name not in self._owned:
                n = n or count_samples(x, y)
                self.extras.update(name, value, n)
        if self._believed and self._losses_own:
            self._losses_own = self._made_by_losses(summary)

    def _made_by_losses(self, summary: Mapping[str, Any]) -> bool:
        """Whether the step called the losses once and returned as "loss" the very total they made (no other loss name)."""
        losses = self.owner.compiled_losses
        assert losses is not None  # a believed name is a loss name
        calls, self._loss_calls = self._loss_calls, losses.calls
        value, last = summary["loss"] if "loss" in summary else None, losses.last
        return (
            self._believed == _TOTAL
            and losses.calls == calls + 1
            and isinstance(value, torch.Tensor)
            and last is not None
            and value.data_ptr() == last.data_ptr()  # `loss.detach()` shares the storage of the loss made
            and value.dtype is last.dtype
        )

    def _find_owned(self, summary: Mapping[str, Any]) -> set[str]:
        """The names read from the losses and metrics in this pass (decided once, at its first step)."""
        losses, metrics = self.owner.compiled_losses, self.owner.compiled_metrics
        owned: set[str] = set()
        if losses is not None and losses.calls:
            loss_names = set(losses.owned)
            self._believed = frozenset(loss_names & summary.keys()) if self.believe_steps else frozenset()
            owned |= loss_names - self._believed
        if metrics.calls:
            owned.update(metrics.owned(self.training))
        return owned

    def tensors(self) -> dict[str, torch.Tensor]:
        """The values so far, as tensors (reading them as floats waits for the device)."""
        losses, metrics = self.owner.compiled_losses, self.owner.compiled_metrics
        extras = self.extras.means()
        values: dict[str, torch.Tensor] = {}
        if losses is not None and losses.calls:
            for name, value in losses.epoch_values().items():
                believed = extras.pop(name) if name in self._believed else value
                values[name] = value if self._losses_own else believed
        values.update(metrics.epoch_values(self.training))
        values.update(extras)
        return values

    def read(self) -> dict[str, float]:
        """The pass's values as floats, combined over all processes when distributed (one sync)."""
        if distributed.is_distributed():
            self._reduce()
        values = self.tensors()
        scalars = {name: value for name, value in values.items() if value.numel() == 1}
        for name in values.keys() - scalars.keys():
            if name not in _warned_non_scalar:
                _warned_non_scalar.add(name)
                logger.warning(
                    f"`{name}` is not a scalar (shape {tuple(values[name].shape)}), so it is left out of the summary; "
                    f"read it from `manager.metric_fns[{name!r}].result`."
                )
        return to_floats(scalars)

    def _reduce(self) -> None:
        losses, metrics = self.owner.compiled_losses, self.owner.compiled_metrics
        streams = ([losses] if losses is not None else []) + [metrics]
        for stream in streams:
            for module in stream.modules():
                distributed.reduce_states(module, counted=self.counted)
            stream.tracker.all_reduce()
        self.extras.all_reduce()

    def state_dict(self) -> dict[str, Any]:
        """The running state of the pass (copies): losses, metrics and extra values, and whether the believed loss
        values so far were the losses' own."""
        losses = self.owner.compiled_losses
        return {
            "losses": losses.state_dict() if losses is not None else None,
            "metrics": self.owner.compiled_metrics.state_dict(),
            "extras": {key: dict(value) for key, value in self.extras.state_dict().items()},
            "losses_own": self._losses_own,
        }

    def whole_state_dict(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The running state `state` (this process's) combined over all processes (a collective; `state` itself in
        one process): what one process would hold had it run every process's batches. The pass's own state is
        left as it was."""
        if not distributed.is_distributed():
            return dict(state)
        mine, counted = self.state_dict(), self.counted
        try:
            self.load_state_dict(state)
            self.counted = counted  # a rank whose share had no batch stays out of the reductions
            self._reduce()
            return self.state_dict()
        finally:
            self.load_state_dict(mine)
            self.counted = counted

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`."""
        losses = self.owner.compiled_losses
        if losses is not None and state.get("losses") is not None:
            losses.load_state_dict(state["losses"])
        self.owner.compiled_metrics.load_state_dict(state.get("metrics", {}))
        self.extras.load_state_dict(state.get("extras", {"totals": {}, "counts": {}}))
        self.counted = True
        self._owned = None
        self._losses_own = bool(state.get("losses_own", True))
        self._loss_calls = losses.calls if losses is not None else 0


@contextlib.contextmanager
def running(stack: list[EpochValues], values: EpochValues, *, fresh: bool = True) -> Iterator[EpochValues]:
    """Run a pass with `values`: the live pass below it (if any) is parked and given back after.

    Args:
        stack: The manager's live passes, innermost last.
        values: The pass to run.
        fresh: Reset `values` first (False when resuming a pass from a checkpoint).
    """
    enclosing = stack[-1] if stack else None
    parked = enclosing.state_dict() if enclosing is not None and enclosing is not values else None
    stack.append(values)
    if fresh:
        values.reset()
    try:
        yield values
    finally:
        stack.pop()
        if enclosing is not None and parked is not None:
            enclosing.load_state_dict(parked)
