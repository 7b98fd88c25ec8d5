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

__all__ = ["VAL_PREFIX", "MeanTracker", "count_samples", "merge_summaries", "summable", "to_floats"]

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


class MeanTracker:
    """Sample-weighted running means of named values, kept as tensors on the values' device.

    `update` never waits for the device: it adds `value * n` to a device tensor and `n` to a
    host int. Sums are float32 or wider whatever the values' dtype (a bfloat16 sum stops
    growing at 256, a float16 one overflows past 65504); counts are exact ints. `means()`
    returns tensors; turn them into floats with `to_floats`.
    """

    def __init__(self) -> None:
        self._totals: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._totals

    def reset(self) -> None:
        """Forget every value."""
        self._totals.clear()
        self._counts.clear()

    def update(self, name: str, value: torch.Tensor | float, n: int = 1) -> None:
        """Add the batch mean `value` of `n` samples to the running mean of `name`."""
        value = summable(value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(float(value)))
        if name in self._totals:
            self._totals[name] += value * n
            self._counts[name] += n
        else:
            self._totals[name] = value * n  # a new tensor: the caller's value is never aliased
            self._counts[name] = n

    def state_dict(self) -> dict[str, Any]:
        """The running sums and counts, for a checkpoint (tensors and ints only)."""
        return {"totals": dict(self._totals), "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`'s sums and counts."""
        self._totals = {name: summable(total).clone() for name, total in state["totals"].items()}
        self._counts = {name: int(count) for name, count in state["counts"].items()}

    def all_reduce(self) -> None:
        """Sum the running sums and counts over all processes (in place; call it once, before reading)."""
        if not is_distributed():
            return
        for name in sorted(self._totals):
            all_reduce_sum(self._totals[name])
            # int64: a float32 count is exact only up to 2**24
            count = all_reduce_sum(
                torch.tensor(self._counts[name], dtype=torch.int64, device=self._totals[name].device)
            )
            self._counts[name] = int(count.item())

    def means(self) -> dict[str, torch.Tensor]:
        """Each name's sample-weighted mean since the last `reset()`, as a tensor."""
        return {name: total / self._counts[name] for name, total in self._totals.items()}


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
