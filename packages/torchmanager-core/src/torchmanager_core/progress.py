"""Progress display and the "torchmanager" logger: a tqdm bar per epoch, refreshed on a clock.

The bar counts every step (cheap, host only) and is drawn only when its own clock says so: at
most every `refresh_s` seconds, which is also the only time a running summary is read from the
device. tqdm's own redraw timer is off, so what is drawn depends on that one (injectable) clock.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import torch
from tqdm import tqdm

from .callbacks import Callback
from .distributed import is_main_process
from .tracking import merge_summaries, to_floats

__all__ = [
    "EpochProgress",
    "ProgressBar",
    "VerboseType",
    "add_console",
    "format_summary",
    "log_model",
    "log_summary",
    "logger",
]

logger = logging.getLogger("torchmanager")
"""The logger receiving epoch summaries at INFO (and interruptions, device fallbacks)."""


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is when a record comes (notebooks and test runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current stdout


def add_console(console: logging.Handler | None = None, formatter: logging.Formatter | None = None) -> None:
    """Print the "torchmanager" logger's INFO records to stdout, once (upstream's `view.add_console`).

    Args:
        console: A handler to use instead (upstream's parameter); it replaces any handler of its class.
        formatter: The format of the records; default the message alone.
    """
    if console is None:
        if not any(isinstance(h, _Console) for h in logger.handlers):
            handler = _Console()
            handler.setFormatter(formatter or logging.Formatter("%(message)s"))
            logger.addHandler(handler)
    else:
        console.setLevel(logging.INFO)
        console.setFormatter(formatter or logging.Formatter("%(message)s"))
        for old in [h for h in logger.handlers if type(h) is type(console)]:
            logger.removeHandler(old)
        logger.addHandler(console)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def log_summary(prefix: str, summary: Mapping[str, float]) -> None:
    """Log one summary line (`prefix: name=value, ...`) to the "torchmanager" logger, on the main process."""
    if is_main_process():
        add_console()
        logger.info(f"{prefix}: {format_summary(summary)}")


def log_model(model: torch.nn.Module, device: torch.device, precision: str) -> None:
    """Log what `fit` trains (Keras's `model.summary()` in one line): the model class, its parameters and where."""
    if not is_main_process():
        return
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    add_console()
    logger.info(
        f"Training {type(model).__name__}: {total:,} parameters ({trainable:,} trainable, {total - trainable:,} frozen) "
        f"on {device}, precision {precision}"
    )


def format_summary(summary: Mapping[str, float]) -> str:
    """`name=value` pairs, 4 decimals, comma separated."""
    return ", ".join(f"{name}={value:.4f}" for name, value in summary.items())


class EpochProgress:
    """A tqdm bar over one epoch's steps, with live values refreshed on a time basis.

    The bar is drawn when it opens, after a step when `refresh_s` seconds have passed on `clock`
    since the last draw (except the epoch's last step), and by `close` with the final values.

    Args:
        total: Steps in the epoch, or None when unknown.
        description: Bar label, e.g. "Epoch 1/10".
        enabled: Without it, nothing is drawn and `step` does nothing.
        refresh_s: Minimum seconds between two draws (each reads the values from the device).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        enabled: bool,
        refresh_s: float = 0.5,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bar = (
            tqdm(
                total=total,
                desc=description,
                leave=True,
                dynamic_ncols=True,
                mininterval=math.inf,  # tqdm never redraws by itself: `step` and `close` decide
                maxinterval=math.inf,
            )
            if enabled
            else None
        )
        self.enabled = self._bar is not None
        self._refresh_s = refresh_s
        self._clock = clock
        self._last = clock() if self.enabled else 0.0

    def step(self, read_values: Callable[[], Mapping[str, torch.Tensor | float]]) -> None:
        """Count one step; every `refresh_s` seconds draw the bar with `read_values()` in the postfix.

        The last step of a known total is left to `close`, which draws it with the epoch's summary.
        """
        if self._bar is None:
            return
        self._bar.update(1)
        if self._bar.total is not None and self._bar.n >= self._bar.total:
            return
        now = self._clock()
        if now - self._last >= self._refresh_s:
            self._last = now
            self._bar.set_postfix(to_floats(read_values()), refresh=True)

    def close(self, summary: Mapping[str, float] | None = None) -> None:
        """Show the final `summary` and close the bar."""
        if self._bar is None:
            return
        if summary:
            self._bar.set_postfix(summary, refresh=False)
        self._bar.close()
        self._bar = None


class VerboseType(Enum):
    """Which values a `ProgressBar` shows (upstream's names and values)."""

    ALL = -1
    NONE = 0
    LOSS = 1
    METRICS = 2


class ProgressBar(Callback):
    """A tqdm bar per training epoch as a callback, showing the last batch's values (upstream's class).

    `fit(..., show_verbose=True)` draws an equivalent bar (with epoch means) without any callback;
    this one is for code that adds it explicitly. Its values are read at most every `refresh_s`
    seconds (a device sync then, never per step).

    Args:
        iterations_per_epoch: The bar's total, or None when unknown.
        verbose_type: Show all values, none, the losses only, or the metrics only.
        refresh_s: Minimum seconds between two reads of the values.
        clock: Seconds, monotonic, that `refresh_s` is measured on (tests pass their own).
    """

    def __init__(
        self,
        iterations_per_epoch: int | None = None,
        *,
        verbose_type: VerboseType = VerboseType.ALL,
        refresh_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(verbose_type, VerboseType):
            raise TypeError(
                f"`verbose_type` must be a VerboseType (ALL, NONE, LOSS or METRICS). Received: verbose_type={verbose_type!r}"
            )
        self.iterations_per_epoch = iterations_per_epoch
        self.verbose_type = verbose_type
        self.refresh_s = refresh_s
        self.clock = clock
        self._bar: EpochProgress | None = None

    def _shown(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        if self.verbose_type is VerboseType.NONE:
            return {}
        if self.verbose_type is VerboseType.LOSS:
            return {name: value for name, value in summary.items() if "loss" in name}
        if self.verbose_type is VerboseType.METRICS:
            return {name: value for name, value in summary.items() if "loss" not in name}
        return dict(summary)

    def on_epoch_start(self, epoch: int) -> None:
        self._bar = EpochProgress(
            self.iterations_per_epoch, f"Epoch {epoch + 1}", is_main_process(), self.refresh_s, clock=self.clock
        )

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self._bar is not None:
            self._bar.step(lambda: self._shown(summary))

    def on_epoch_end(
        self,
        epoch: int,
        summary: Mapping[str, float] = {},
        val_summary: Mapping[str, float] | None = None,
    ) -> None:
        if self._bar is not None:
            self._bar.close(self._shown(merge_summaries(summary, val_summary)))
            self._bar = None

    def on_train_end(self, model: torch.nn.Module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
