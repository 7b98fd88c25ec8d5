"""Progress display and the "torchmanager" logger: a tqdm bar per epoch, refreshed on a clock.

The bar advances every step (cheap, host only); its postfix of live values is rebuilt at most
every `refresh_s` seconds, which is the only time a running summary is read from the device.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping

import torch
from tqdm import tqdm

from .tracking import to_floats

__all__ = ["EpochProgress", "add_console", "format_summary", "logger"]

logger = logging.getLogger("torchmanager")
"""The logger receiving epoch summaries at INFO (and interruptions, device fallbacks)."""


def add_console() -> None:
    """Print the "torchmanager" logger's INFO records to stdout, once (upstream's `view.add_console`)."""
    if not any(getattr(h, "_torchmanager_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._torchmanager_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def format_summary(summary: Mapping[str, float]) -> str:
    """`name=value` pairs, 4 decimals, comma separated."""
    return ", ".join(f"{name}={value:.4f}" for name, value in summary.items())


class EpochProgress:
    """A tqdm bar over one epoch's steps, with live values refreshed on a time basis.

    Args:
        total: Steps in the epoch, or None when unknown.
        description: Bar label, e.g. "Epoch 1/10".
        enabled: Without it, nothing is drawn and `step` does nothing.
        refresh_s: Minimum seconds between two postfix refreshes (device reads).
    """

    def __init__(self, total: int | None, description: str, enabled: bool, refresh_s: float = 0.5) -> None:
        self._bar = tqdm(total=total, desc=description, leave=True, dynamic_ncols=True) if enabled else None
        self.enabled = self._bar is not None
        self._refresh_s = refresh_s
        self._last = time.monotonic()

    def step(self, read_values: Callable[[], Mapping[str, torch.Tensor | float]]) -> None:
        """Advance by one step; every `refresh_s` seconds show `read_values()` in the postfix."""
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if now - self._last >= self._refresh_s:
            self._last = now
            self._bar.set_postfix(to_floats(read_values()), refresh=False)

    def close(self, summary: Mapping[str, float] | None = None) -> None:
        """Show the final `summary` and close the bar."""
        if self._bar is None:
            return
        if summary:
            self._bar.set_postfix(summary, refresh=False)
        self._bar.close()
        self._bar = None
