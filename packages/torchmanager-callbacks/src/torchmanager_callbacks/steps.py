"""`EveryNSteps`: when per-step logging is due, counted in optimizer updates (`manager.global_step`).

Who owns what: loggers (`TensorBoard`, `CSVLogger`) call `due` after each batch and write the
step's values only when it says so, so the batch values are read from the device once every N
updates, never per step. With gradient accumulation a step is one window of batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from torchmanager_core.tracking import to_floats

__all__ = ["EveryNSteps", "scalar_floats"]


class EveryNSteps:
    """Says at which optimizer updates (every `n`-th of the run) a per-step point is written.

    Args:
        n: The number of updates between two points, or None for no per-step points.
    Raises:
        ValueError: `n` is not an int >= 1 or None.
    """

    def __init__(self, n: int | None, name: str = "log_every_n_steps") -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(
                f"`{name}` must be a positive int, or None for no per-step metrics. Received: {name}={n!r}"
            )
        self.n = n
        self._last: int | None = None

    def start(self, manager: Any) -> None:
        """At train start: a resumed run has already written the point of the step it resumes at."""
        self._last = getattr(manager, "global_step", None)

    def due(self, manager: Any) -> int | None:
        """The global step to write a point for after this batch, or None."""
        step = getattr(manager, "global_step", None)
        if self.n is None or not isinstance(step, int) or step == self._last or step == 0 or step % self.n:
            return None
        self._last = step
        return step


def scalar_floats(summary: Mapping[str, Any]) -> dict[str, float]:
    """The scalar values of a step's summary as floats (one device sync for all of them)."""
    scalars = {
        key: value
        for key, value in summary.items()
        if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
    }
    return to_floats(scalars)
