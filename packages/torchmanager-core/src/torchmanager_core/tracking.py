"""Epoch summaries: device-side means for untracked values, and floats made in one place.

Who owns what: losses and metrics with their own state (`reset()`/`result`) are read once per
epoch by the managers; everything else a step returns (a plain torch loss, a user's extra
keys) is averaged here, sample-weighted, as tensors on the device. `to_floats` is the only
place where summary tensors become Python floats (one device sync per call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .distributed import all_reduce_sum, is_distributed

__all__ = ["PENDING_BATCHES", "VAL_PREFIX", "MeanTracker", "count_samples", "merge_summaries", "summable", "to_floats"]

VAL_PREFIX = "val_"
"""What names a validation value in a merged summary: `val_loss` is the validation `loss`."""


def merge_summaries(summary: Mapping[str, Any], val_summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An epoch's one summary: the training values, then the validation ones with `val_` prefixed once.

    A validation name that already starts with `val_` keeps it (`val_x` stays `val_x`, never
    `val_val_x`); on a clash, the validation value wins.
    """
    merged = dict(summary)
    for name, value in (val_summary or {}).items():
        merged[name if name.startswith(VAL_PREFIX) else VAL_PREFIX + name] = value
    return merged


def count_samples(x: Any, y: Any) -> int:
    """The batch size: the first dimension of the label's first tensor, else of the input's (else 1).

    The same rule as `torchmanager_metrics.metric.batch_size`, kept here because core does not
    depend on the metrics distribution (DESIGN.md section 1); change both together.
    """
    for value in (y, x):
        tensor = _first_tensor(value)
        if tensor is not None and tensor.dim() > 0:
            return int(tensor.shape[0])
    return 1


def summable(value: torch.Tensor) -> torch.Tensor:
    """`value` in a dtype fit to sum: float32 and float64 as they are, anything else as float32.

    A bfloat16 running sum stops growing at 256 and a float16 one overflows past 65504; integers
    have no fractional mean. The gradient, if any, is kept. (`torchmanager_metrics` widens its
    sums by the same rule; core does not depend on it, DESIGN.md section 1.)
    """
    return value if value.dtype is torch.float32 or value.dtype is torch.float64 else value.float()


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


PENDING_BATCHES = 64
"""Batches a tracked value keeps aside before they are added to its running sum in one go (see `MeanTracker`)."""


class MeanTracker:
    """Sample-weighted running means of named values, kept as tensors on the values' device.

    `update` never waits for the device, and launches no kernel: the batch's value waits in a
    host-side list, and every `PENDING_BATCHES` batches of a name its waiting values are added to
    its sum in one go, grouped by batch size (`sum(values) * n`, with no host-to-device copy of the
    sizes). Reads (`means`) see the waiting values without adding them, and `state_dict` keeps
    them apart, so reading, parking a pass or a checkpoint never changes the order of the sums.
    Sums are float32 or wider whatever the values' dtype (a bfloat16 sum stops growing at 256, a
    float16 one overflows past 65504); counts are exact ints. `means()` returns tensors; turn them
    into floats with `to_floats`.
    """

    def __init__(self) -> None:
        self._totals: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._pending: dict[str, list[list[Any]]] = {}  # per name, `[value, n]` of each batch not yet summed

    def __contains__(self, name: object) -> bool:
        return name in self._totals or name in self._pending

    def reset(self) -> None:
        """Forget every value."""
        self._totals.clear()
        self._counts.clear()
        self._pending.clear()

    def update(self, name: str, value: torch.Tensor | float, n: int = 1) -> None:
        """Add the batch mean `value` of `n` samples to the running mean of `name` (a tensor's graph is not kept)."""
        if isinstance(value, torch.Tensor):  # a copy: the caller may change its tensor in place (a CUDA graph's output)
            value = value.detach().clone()
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = []
        pending.append([value, n])
        if len(pending) >= PENDING_BATCHES:
            self._totals[name], self._counts[name] = self._summed(name)
            del self._pending[name]

    def _summed(self, name: str) -> tuple[torch.Tensor, int]:
        """The sum and count of `name` with its waiting values added: those of each batch size summed, times it."""
        by_size: dict[int, list[torch.Tensor]] = {}
        pending = self._pending.get(name, [])
        for value, n in pending:
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(float(value))
            by_size.setdefault(n, []).append(summable(tensor))
        total = self._totals.get(name)
        for n, values in by_size.items():
            part = (values[0] if len(values) == 1 else torch.stack(values).sum(0)) * n  # a new tensor
            total = part if total is None else total.to(part.device) + part  # a restored sum may be on the CPU
        assert total is not None  # a name has a sum or waiting values
        return total, self._counts.get(name, 0) + sum(n for _, n in pending)

    def state_dict(self) -> dict[str, Any]:
        """The running sums, counts and waiting values, for a checkpoint (tensors, ints and lists only)."""
        pending = {name: [list(item) for item in items] for name, items in self._pending.items()}
        return {"totals": dict(self._totals), "counts": dict(self._counts), "pending": pending}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`'s sums, counts and waiting values."""
        self._totals = {name: summable(total).clone() for name, total in state["totals"].items()}
        self._counts = {name: int(count) for name, count in state["counts"].items()}
        self._pending = {name: [list(item) for item in items] for name, items in state.get("pending", {}).items()}

    def all_reduce(self) -> None:
        """Sum the running sums and counts over all processes (in place; call it once, before reading)."""
        if not is_distributed():
            return
        for name in list(self._pending):
            self._totals[name], self._counts[name] = self._summed(name)
            del self._pending[name]
        for name in sorted(self._totals):
            all_reduce_sum(self._totals[name])
            # int64: a float32 count is exact only up to 2**24
            count = all_reduce_sum(
                torch.tensor(self._counts[name], dtype=torch.int64, device=self._totals[name].device)
            )
            self._counts[name] = int(count.item())

    def means(self) -> dict[str, torch.Tensor]:
        """Each name's sample-weighted mean since the last `reset()`, as a tensor (the waiting values included)."""
        means = {}
        for name in [*self._totals, *(name for name in self._pending if name not in self._totals)]:
            total, count = self._summed(name) if name in self._pending else (self._totals[name], self._counts[name])
            means[name] = total / count
        return means


def to_floats(summary: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """Turn a summary of scalar tensors (on any device) and numbers into floats, with one sync.

    Raises:
        ValueError: A value is a tensor with more than one element.
    """
    tensors: list[torch.Tensor] = []
    for name, value in summary.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"A summary value must be a scalar to be reported; `{name}` has shape {tuple(value.shape)}. "
                    f"Report a scalar (e.g. a mean) under `{name}`. Received: {name}={tuple(value.shape)}"
                )
            dtype = torch.float32 if value.device.type == "mps" else torch.float64  # MPS has no float64
            tensors.append(value.detach().reshape(()).to(dtype))
    devices: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        devices.setdefault(tensor.device, []).append(tensor)
    values = {device: iter(torch.stack(group).tolist()) for device, group in devices.items()}
    return {
        name: next(values[value.device]) if isinstance(value, torch.Tensor) else float(value)
        for name, value in summary.items()
    }
