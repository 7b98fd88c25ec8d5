"""`MonitorType` and `Monitor`: which summary value a callback watches, and when it improved.

Who owns what: `BestCheckpoint`, `EarlyStop`, `LrScheduler` (with `ReduceLROnPlateau`) and
`Experiment` all read their monitored value through `Monitor.read`, so they agree on the rule:
the validation value when the epoch was validated, else the training value. They agree on the
direction too: without a `monitor_type`, `infer_monitor_type` picks it from the name, as Keras's
`mode="auto"` does (losses and errors are best at their lowest, other metrics at their highest).
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from types import FrameType

from torchmanager_core.protocols import MonitorType

__all__ = ["Monitor", "Monitored", "MonitorError", "MonitorType", "check_monitor_type", "infer_monitor_type"]


class MonitorError(KeyError):
    """A monitored name is not in the epoch summary (a `KeyError` whose message reads plainly)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_LOWER_IS_BETTER = frozenset(
    {"loss", "error", "err", "mse", "mae", "rmse", "msle", "mape", "fid", "kid", "lpips", "distance", "perplexity"}
    | {"ppl", "wer", "cer", "hausdorff", "nll", "bpd"}
)
"""Words of a summary name that make its best value the lowest (a name ending in `loss` does too)."""


def infer_monitor_type(name: str) -> MonitorType:
    """The direction of a summary value from its name: MIN for losses and errors, MAX otherwise.

    `loss`, `val_loss`, `ce_loss`, `totalloss` and names with an error-like word (`mse`, `mae`,
    `rmse`, `error`, `fid`, `lpips`, `perplexity`, ... split at `_`, `-`, `.`, `/` and spaces) are
    MIN; accuracy, PSNR, SSIM, F1, IoU, Dice and every other name are MAX.
    """
    lowered = name.lower()
    words = set(re.split(r"[_\-./ ]+", lowered))
    return MonitorType.MIN if lowered.endswith("loss") or words & _LOWER_IS_BETTER else MonitorType.MAX


def check_monitor_type(monitor_type: object, name: str | None = None) -> MonitorType:
    """Return `monitor_type` if it is `MonitorType.MIN` or `MonitorType.MAX` (None: `infer_monitor_type(name)`).

    Raises:
        TypeError: `monitor_type` is something else (or None without a `name`).
    """
    if monitor_type is None and isinstance(name, str):
        return infer_monitor_type(name)
    if not isinstance(monitor_type, MonitorType):
        raise TypeError(
            "`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None (from the monitor's name). "
            f"Received: monitor_type={monitor_type!r}"
        )
    return monitor_type


def _first_frame_outside_this_package() -> int:
    """The `stacklevel` (for a `warnings.warn` in the caller) of the user's line that made the callback."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE = os.path.dirname(__file__)


class Monitor:
    """A monitored summary value and its best so far.

    Args:
        name: The summary key, e.g. "accuracy" (the validation value is used when there is one) or
            "val_accuracy" / "loss" to name one explicitly.
        monitor_type: Whether larger (MAX) or smaller (MIN) is better; None infers it from `name`
            (`infer_monitor_type`: MIN for losses and errors, MAX for the rest).
        min_delta: How much a value must beat the best by to count as an improvement (>= 0).
    Raises:
        TypeError: `name` is not a non-empty str, or `monitor_type` is not a `MonitorType` or None.
        ValueError: `min_delta` is negative or not finite.
    """

    def __init__(self, name: str, monitor_type: MonitorType | None = None, min_delta: float = 0.0) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"`monitor` must be the name of a summary value, a non-empty str. Received: monitor={name!r}"
            )
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not 0 <= min_delta < math.inf:
            raise ValueError(f"`min_delta` must be a finite number >= 0. Received: min_delta={min_delta!r}")
        self.name = name
        self.monitor_type = check_monitor_type(monitor_type, name)
        if self.monitor_type is MonitorType.MAX and infer_monitor_type(name) is MonitorType.MIN:
            warnings.warn(
                f"Monitor `{name}` keeps the highest value (MonitorType.MAX, given), the worst one for a loss or an "
                f"error: pass monitor_type=MonitorType.MIN, or leave it out to infer it from the name (in an "
                f"Experiment, monitors=[{name!r}]), to keep the lowest.",
                UserWarning,
                stacklevel=_first_frame_outside_this_package(),
            )
        self.min_delta = float(min_delta)
        self.best = self.monitor_type.init_score

    def read(self, summary: Mapping[str, float], val_summary: Mapping[str, float] | None = None) -> float:
        """The monitored value of an epoch: validation's when present, else training's.

        Raises:
            MonitorError: Neither summary holds the monitored name (the message lists the available keys).
        """
        if val_summary is not None and self.name in val_summary:
            return float(val_summary[self.name])
        if val_summary is not None and self.name.startswith("val_") and self.name[4:] in val_summary:
            return float(val_summary[self.name[4:]])
        if self.name in summary:
            return float(summary[self.name])
        available = [*summary, *(f"val_{key}" for key in val_summary or {})]
        raise MonitorError(
            f"Monitor `{self.name}` is not in the epoch summary; monitor one of "
            f"{', '.join(f'`{key}`' for key in available)}. Received: monitor={self.name!r}"
        )

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best by more than `min_delta` (NaN never does)."""
        return self.beats(self.monitor_type, value, self.best, self.min_delta)

    @staticmethod
    def beats(monitor_type: MonitorType, value: float, other: float, min_delta: float = 0.0) -> bool:
        """Whether `value` is better than `other` by more than `min_delta` (NaN never is)."""
        if monitor_type is MonitorType.MAX:
            return value - min_delta > other
        return value + min_delta < other

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best = float(state["best"])


class Monitored:
    """What a callback watching one summary value exposes (mixed into BestCheckpoint and EarlyStop)."""

    _monitor: Monitor

    @property
    def monitor(self) -> str:
        """The watched summary name."""
        return self._monitor.name

    @property
    def monitor_type(self) -> MonitorType:
        """Whether larger (MAX) or smaller (MIN) is better."""
        return self._monitor.monitor_type

    @property
    def best_score(self) -> float:
        """The best value so far (`monitor_type.init_score` before the first epoch)."""
        return self._monitor.best
