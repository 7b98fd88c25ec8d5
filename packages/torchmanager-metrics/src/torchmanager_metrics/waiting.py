"""The batches a metric has counted but not yet added to its `total` and `count` states.

Who owns what: `metric.Metric` decides when they are added (every `PENDING_BATCHES` batches, a
position that depends only on the batches counted since the last reset, and when the state is
merged or moved); this module keeps them and sums them. A read of the state (`compute`, a state
dict) sees them without adding them, so reading, parking a pass or saving a checkpoint never
changes the order in which the sums are taken: a run that did any of these gives the same bits as
one that did not.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HELD_ELEMENTS", "PENDING_BATCHES", "Waiting"]

PENDING_BATCHES = 64
"""Batches whose sums a metric keeps aside before adding them to its state in one go."""

HELD_ELEMENTS = 2**16
"""The largest boolean mask (of hits) a metric keeps as it is, to count it with the others when they are added;
a larger one is counted at once (so what waits stays under `PENDING_BATCHES` x this many bytes)."""

Count = int | torch.Tensor


class Waiting:
    """Batch sums and means kept on the host (each batch costs a list append, not a kernel), and samples counted.

    Attributes:
        sums: `(sum, n)` per batch: a 0-dim sum (a float, or an integer count of hits) over `n`
            samples (a host int, or a 0-dim tensor on the sum's device).
        means: `(mean, weight)` per batch: a 0-dim float mean and its 0-dim tensor weight.
        hits: Boolean masks whose `True` elements add 1 each to the sum (their elements are
            counted in `samples` already): counted all at once, one kernel instead of one a batch.
        samples: Samples counted on the host, not yet in `count`.
    """

    __slots__ = ("hits", "means", "samples", "sums")

    def __init__(self) -> None:
        self.sums: list[tuple[torch.Tensor, Count]] = []
        self.means: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.hits: list[torch.Tensor] = []
        self.samples = 0

    def __bool__(self) -> bool:
        return bool(self.sums or self.means or self.hits or self.samples)

    @property
    def batches(self) -> int:
        """The batches waiting."""
        return len(self.sums) + len(self.means) + len(self.hits)

    def totals(self) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """What waits, summed: to add to `total` (or None), to add to `count` as a tensor (or None), and as an int."""
        total: torch.Tensor | None = None
        count: torch.Tensor | None = None
        samples = self.samples
        if self.sums:
            sums = self.sums
            total = sums[0][0] if len(sums) == 1 else torch.stack([value for value, _ in sums]).sum(0)
            on_device = [n for _, n in sums if isinstance(n, torch.Tensor)]
            samples += sum(n for _, n in sums if not isinstance(n, torch.Tensor))
            if on_device:
                count = on_device[0] if len(on_device) == 1 else torch.stack(on_device).sum()
        if self.hits:
            hits = (
                self.hits[0] if len(self.hits) == 1 else torch.cat([mask.reshape(-1) for mask in self.hits])
            ).count_nonzero()
            total = hits if total is None else total + hits
        if self.means:
            values = torch.stack([value for value, _ in self.means])
            weights = torch.stack([weight for _, weight in self.means])
            weighted, weight = (values * weights).sum(0), weights.sum()
            total = weighted if total is None else total + weighted
            count = weight if count is None else count + weight
        return total, count, samples

    def clear(self) -> None:
        """Forget what waits (it was added, or the state was reset or replaced)."""
        self.sums.clear()
        self.means.clear()
        self.hits.clear()
        self.samples = 0

    def state(self) -> dict[str, Any]:
        """What waits, as lists, ints and copies of tensors (a checkpoint loads it with `weights_only=True`)."""
        return {
            "sums": [[value.clone(), n.clone() if isinstance(n, torch.Tensor) else n] for value, n in self.sums],
            "means": [[value.clone(), weight.clone()] for value, weight in self.means],
            "hits": [mask.clone() for mask in self.hits],
            "samples": self.samples,
        }

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        """Wait again for what `state()` gave, on `device`."""
        self.sums = [
            (value.to(device), n.to(device) if isinstance(n, torch.Tensor) else int(n)) for value, n in state["sums"]
        ]
        self.means = [(value.to(device), weight.to(device)) for value, weight in state["means"]]
        self.hits = [mask.to(device) for mask in state.get("hits", [])]
        self.samples = int(state["samples"])
