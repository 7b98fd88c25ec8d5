"""Progress bars: a tqdm bar per epoch, refreshed on a clock (the logger and its lines are `run_log`'s).

The bar counts every step (cheap, host only) and is drawn only when its own clock says so: at
most every `refresh_s` seconds, which is also the only time a running summary is read from the
device. tqdm's own redraw timer is off, so what is drawn depends on that one (injectable) clock.
During `fit` an epoch is one line: the bar stays open through validation and closes with the
epoch's summary, validation values appended, and the time left for the whole run; the console
then skips the same summary line (log files still get it). `show_verbose="auto"` (the default)
draws bars only in an interactive terminal or a notebook, as Keras's `verbose="auto"`.

A bar never hides a value: while the epoch runs it fits the terminal's width (so each redraw
overwrites the last), and its final line is written whole, wrapping on a narrow terminal, as
Keras's; a terminal that reports 0 columns gets whole lines. In a Jupyter kernel the bar is
`tqdm.auto`'s (a widget with ipywidgets installed).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import IO, Any, Literal, TypeAlias

import torch
from tqdm import tqdm

from .callbacks import Callback
from .distributed import is_main_process
from .run_log import add_console, format_summary, log_model, log_summary, logger
from .tracking import merge_summaries, to_floats

__all__ = [
    "EpochProgress",
    "ProgressBar",
    "RunEta",
    "ShowVerbose",
    "VerboseType",
    "add_console",
    "format_duration",
    "format_summary",
    "in_notebook",
    "log_model",
    "log_summary",
    "logger",
    "wants_progress",
]


ShowVerbose: TypeAlias = bool | Literal["auto"]
"""`show_verbose`: draw progress bars (True), not (False), or only in an interactive terminal ("auto")."""

_CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD")


def wants_progress(show_verbose: ShowVerbose) -> bool:
    """Whether to draw progress bars: True, False, or with "auto" in a Jupyter kernel, or when stderr
    is an interactive terminal and no CI service runs the job (a log file or CI gets the summary lines only)."""
    if show_verbose == "auto":
        if in_notebook():
            return True
        interactive = sys.stderr is not None and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
        return interactive and not any(os.environ.get(name) for name in _CI_VARIABLES)
    if not isinstance(show_verbose, bool):
        raise TypeError(f'`show_verbose` must be True, False or "auto". Received: show_verbose={show_verbose!r}')
    return show_verbose


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython) kernel: the test tqdm.auto makes, without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _bar_class() -> type[tqdm]:  # type: ignore[type-arg]
    """tqdm.auto's bar in a notebook (a widget when ipywidgets is installed), else the terminal's."""
    if in_notebook():
        from tqdm.auto import tqdm as auto

        return auto
    return tqdm


def _columns(stream: IO[str]) -> int | None:
    """The terminal's width for a live bar: its columns, else `COLUMNS`; None (no limit) when 0 or unknown."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
    return columns if columns > 0 else None


def _rows(stream: IO[str]) -> int:
    """The terminal's height, for tqdm: its rows; 20, tqdm's own stand-in, when 0 or unknown.

    Left to itself, tqdm takes `LINES - 1`, or -1 when the terminal reports 0 rows and no `LINES`,
    and then hides every bar (a bar's row must be above the last): each epoch became a blank line.
    """
    try:
        rows = os.get_terminal_size(stream.fileno()).lines
    except (AttributeError, OSError, ValueError):
        rows = 0
    return rows if rows > 0 else 20


class RunEta:
    """The time left for a whole run, from its mean step time so far.

    Args:
        total_steps: The steps the run makes in all (None when an epoch's length is unknown).
        done: Steps already made (a resumed run's).
        clock: Seconds, monotonic.
    """

    def __init__(self, total_steps: int | None, done: int = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_steps, self._first, self.done = total_steps, done, done
        self._clock = clock
        self._start = clock()

    def step(self) -> None:
        """One more step made."""
        self.done += 1

    def left_s(self) -> float | None:
        """Seconds left at the mean pace of the steps made since this object started, or None."""
        made = self.done - self._first
        if self.total_steps is None or made <= 0:
            return None
        return (self._clock() - self._start) / made * max(self.total_steps - self.done, 0)


def format_duration(seconds: float) -> str:
    """`1h02m`, `3m07s` or `42s`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


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
        eta: The whole run's pace: its time left is drawn beside the label.
        verbose_type: Which values to show.
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        enabled: bool,
        refresh_s: float = 0.5,
        *,
        clock: Callable[[], float] = time.monotonic,
        eta: RunEta | None = None,
        verbose_type: VerboseType | None = None,
    ) -> None:
        self._terminal = not in_notebook()  # a widget sizes itself
        self._bar = (
            _bar_class()(
                total=total,
                desc=description,
                leave=True,
                ncols=_columns(sys.stderr) if self._terminal else None,
                nrows=_rows(sys.stderr) if self._terminal else None,
                mininterval=math.inf,  # tqdm never redraws by itself: `step` and `close` decide
                maxinterval=math.inf,
            )
            if enabled
            else None
        )
        self.enabled = self._bar is not None
        self._description = description
        self._refresh_s = refresh_s
        self._clock = clock
        self._last = clock() if self.enabled else 0.0
        self._eta = eta
        self._shown = (verbose_type or VerboseType.ALL).shown

    def step(self, read_values: Callable[[], Mapping[str, torch.Tensor | float]]) -> None:
        """Count one step; every `refresh_s` seconds draw the bar with `read_values()` in the postfix.

        The last step of a known total is left to `close`, which draws it with the epoch's summary.
        """
        if self._bar is None:
            return
        self._bar.update(1)
        if self._eta is not None:
            self._eta.step()
        if self._bar.total is not None and self._bar.n >= self._bar.total:
            return
        now = self._clock()
        if now - self._last >= self._refresh_s:
            self._last = now
            self._describe()
            if self._terminal:  # a live line fits the terminal, as resized since the last draw
                self._bar.ncols = _columns(self._bar.fp)
            self._bar.set_postfix_str(format_summary(self._shown(to_floats(read_values()))), refresh=True)

    def _describe(self) -> None:
        left = self._eta.left_s() if self._eta is not None else None
        if self._bar is not None and left is not None:
            self._bar.set_description_str(f"{self._description} (run: {format_duration(left)} left)", refresh=False)

    def close(self, summary: Mapping[str, float] | None = None) -> None:
        """Show the final `summary` and close the bar."""
        if self._bar is None:
            return
        self._describe()
        if summary:
            self._bar.set_postfix_str(format_summary(self._shown(summary)), refresh=False)
        self._bar.ncols = None  # the last line whole: a narrow terminal wraps it
        self._bar.close()
        self._bar = None


class VerboseType(Enum):
    """Which values a progress bar shows (upstream's names and values)."""

    ALL = -1
    NONE = 0
    LOSS = 1
    METRICS = 2

    def shown(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """The values of `summary` to show: all, none, the losses (names with "loss") or the rest."""
        if self is VerboseType.NONE:
            return {}
        if self is VerboseType.LOSS:
            return {name: value for name, value in summary.items() if "loss" in name}
        if self is VerboseType.METRICS:
            return {name: value for name, value in summary.items() if "loss" not in name}
        return dict(summary)


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

    def on_epoch_start(self, epoch: int) -> None:
        self._bar = EpochProgress(
            self.iterations_per_epoch,
            f"Epoch {epoch + 1}",
            is_main_process(),
            self.refresh_s,
            clock=self.clock,
            verbose_type=self.verbose_type,
        )

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self._bar is not None:
            self._bar.step(lambda: summary)

    def on_epoch_end(
        self,
        epoch: int,
        summary: Mapping[str, float] = {},
        val_summary: Mapping[str, float] | None = None,
    ) -> None:
        if self._bar is not None:
            self._bar.close(merge_summaries(summary, val_summary))
            self._bar = None

    def on_train_end(self, model: torch.nn.Module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
