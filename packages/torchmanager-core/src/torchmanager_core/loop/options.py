"""What a `fit` was asked for: its arguments, gathered once (`Manager.fit` makes it, the loop reads it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FitOptions"]


@dataclass(frozen=True)
class FitOptions:
    """`fit`'s arguments beyond the data and callbacks (see `Manager.fit`).

    Attributes:
        places: `(device, devices, use_multi_gpus)`, where the run is placed.
        limit_train_batches: Train at most this many batches an epoch (the epoch ends there), or None.
        limit_val_batches: Validate on at most this many batches (each process's share), or None.
        fast_dev_run: Batches of one epoch's training and validation to try, nothing saved; 0 for a real run.
        allow_divergence: Resume on another number of processes where the run cannot continue bit-identical.
        train_kwargs: Passed on to `Manager._train` (a subclass's own).
    """

    epochs: int | None = None
    iterations: int | None = None
    initial_epoch: int | None = None
    resume_from: str | None = None
    places: tuple[Any, Any, bool] = (None, None, False)
    show_verbose: bool = False
    on_nonfinite_loss: Any = "raise"
    on_checkpoint_error: Any = "raise"
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    fast_dev_run: int = 0
    train_kwargs: Mapping[str, Any] = field(default_factory=dict)
    allow_divergence: bool = False
