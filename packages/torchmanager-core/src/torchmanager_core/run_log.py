"""The "torchmanager" logger, its one console, and the lines a run writes to it.

Who owns what: this module owns the logger, the console handler, how a value is written
(`format_value`) and the lines of a run's log: where the run starts, the environment and the
manager's options, the model, the batches, each epoch's summary and the test result. `progress`
owns the bars; `model_summary` the model's table.

One copy of each line: records print on stdout through one console handler, unless a handler up
the logger's tree already prints them on a console (`logging.basicConfig()`): then that one alone
does, in the format its owner chose. A line a progress bar already showed goes to the log files
alone. Epochs are counted from 1 in every line ("Epoch 4/10" is the fourth of ten).
"""

from __future__ import annotations

import logging
import math
import platform
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .__about__ import __version__
from .distributed import get_world_size, is_main_process

__all__ = [
    "add_console",
    "format_batches",
    "format_summary",
    "format_value",
    "log_batches",
    "log_model",
    "log_run_start",
    "log_summary",
    "log_test_result",
    "logger",
]

logger = logging.getLogger("torchmanager")
"""The logger receiving a run's lines at INFO (and interruptions, device fallbacks as warnings)."""


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is when a record comes (notebooks and test runners swap it).

    It skips a record logged with `extra={"console": False}`, and one that a handler up the
    logger's tree prints on a console already.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False or _printed_above(record):
            return False
        return bool(super().filter(record))

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current stdout


def _prints_on_console(handler: logging.Handler) -> bool:
    """Whether `handler` writes to the terminal: ours, or a stream handler on stdout or stderr."""
    if isinstance(handler, _Console):
        return True
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    stream = handler.stream
    return any(stream is console for console in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))


def _reached(record: logging.LogRecord, start: logging.Logger | None) -> Iterator[logging.Handler]:
    """The handlers that emit `record` logged on `start`, as `Logger.callHandlers` walks them."""
    current = start
    while current is not None:
        yield from (handler for handler in current.handlers if record.levelno >= handler.level)
        current = current.parent if current.propagate else None


def _printed_above(record: logging.LogRecord) -> bool:
    """Whether a handler of an ancestor of the "torchmanager" logger prints `record` on a console."""
    return logger.propagate and any(_prints_on_console(h) for h in _reached(record, logger.parent))


def _log(level: int, message: str, *, console: bool = True) -> None:
    """Log `message` on the main process; with `console=False` to every handler but those printing on a console."""
    if not is_main_process():
        return
    add_console()
    if logger.disabled or not logger.isEnabledFor(level):
        return
    if console:
        logger.log(level, message, stacklevel=3)
        return
    path, line, function, _ = logger.findCaller(stacklevel=3)
    record = logger.makeRecord(logger.name, level, path, line, message, (), None, function, {"console": False})
    if logger.filter(record):
        for handler in _reached(record, logger):
            if not _prints_on_console(handler):
                handler.handle(record)


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


def format_value(value: float) -> str:
    """A value as people read it: 4 significant digits from 0.001 to 999,999 (`0.5000`, `2.170`,
    `1234`), else `2.0000e-05`-style; `0`, `nan`, `inf` as such."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    if -3 <= magnitude < 6:
        return f"{value:.{max(3 - magnitude, 0)}f}"
    return f"{value:.4e}"


def format_summary(summary: Mapping[str, float]) -> str:
    """`name=value` pairs, comma separated, each value as `format_value` writes it."""
    return ", ".join(f"{name}={format_value(float(value))}" for name, value in summary.items())


def log_summary(prefix: str, summary: Mapping[str, float], *, console: bool = True) -> None:
    """Log one summary line (`prefix: name=value, ...`), e.g. "Epoch 4/10: loss=0.2170, ...", on the main process.

    Args:
        console: Print it on the console too (False when a progress bar already showed it; the log
            files, the logger's and its ancestors' handlers that do not print on a console, get it).
    """
    _log(logging.INFO, f"{prefix}: {format_summary(summary)}", console=console)


def log_test_result(summary: Mapping[str, float], *, console: bool = True) -> None:
    """Log what `test` returned: "Test: loss=..., accuracy=..." (on the main process)."""
    log_summary("Test", summary, console=console)


def log_model(model: torch.nn.Module, device: torch.device, precision: str) -> None:
    """Log what `fit` trains (Keras's `model.summary()` in one line): the model class, its parameters and where."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _log(
        logging.INFO,
        f"Training {type(model).__name__}: {total:,} parameters ({trainable:,} trainable, {total - trainable:,} "
        f"frozen) on {device}, precision {precision}",
    )


def log_run_start(
    model: torch.nn.Module,
    device: torch.device,
    precision: str,
    *,
    options: Mapping[str, object] | None = None,
    epoch: int = 0,
    total_epochs: int | None = None,
    step: int = 0,
) -> None:
    """Log a run's start, on the main process: the model line on the console and in the log; where the run
    starts, the environment, the manager's options and the model's table in the log files alone.

    Args:
        model: The model trained (unwrapped).
        device: Where it trains.
        precision: The precision's name, e.g. "fp32" or "bf16-mixed".
        options: The manager's options (`accumulate_grad_batches`, clipping, ...), written `name=value`.
        epoch: Epochs already done (0 for a fresh run): the run starts in epoch `epoch + 1`.
        total_epochs: The epochs of the whole run, if known.
        step: Batches already done in that epoch (a run resumed mid-epoch).
    """
    from .model_summary import model_summary

    of_total = f"/{total_epochs}" if total_epochs is not None else ""
    if epoch == 0 and step == 0:
        start = f"Run: starts at epoch 1{of_total}"
    else:
        start = f"Run: resumes at epoch {epoch + 1}{of_total}" + (f", after batch {step}" if step else "")
    _log(logging.INFO, start, console=False)
    _log(logging.INFO, f"Environment: {describe_environment(device, precision)}", console=False)
    if options:
        written = ", ".join(f"{name}={_option(value)}" for name, value in options.items())
        _log(logging.INFO, f"Options: {written}", console=False)
    log_model(model, device, precision)
    _log(logging.INFO, f"Model:\n{model_summary(model)}", console=False)


def _option(value: object) -> str:
    return format_value(value) if isinstance(value, float) else str(value)


def describe_environment(device: torch.device, precision: str) -> str:
    """The versions, the device and the processes of this run, e.g. "torchmanager 2.0.0, torch 2.13.0,
    Python 3.11.7 (Linux-6.1-x86_64), device cpu, precision fp32, 1 process"."""
    where = str(device)
    if device.type == "cuda" and torch.cuda.is_available():
        where += f" ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    processes = get_world_size()
    backend = f" ({torch.distributed.get_backend()})" if processes > 1 else ""
    return (
        f"torchmanager {__version__}, torch {torch.__version__}, Python {platform.python_version()} "
        f"({platform.platform(terse=True)}), device {where}, precision {precision}, "
        f"{processes} process{'es' if processes > 1 else ''}{backend}"
    )


def format_batches(
    batch_size: int | None,
    steps_per_epoch: int | None,
    *,
    processes: int = 1,
    accumulate: int = 1,
    total_epochs: int | None = None,
) -> str:
    """The line `fit` says at its start about batches and steps, per process and in all.

    Under torchrun each process takes `batch_size` samples a step and makes `steps_per_epoch` steps
    an epoch (its share of the data), so a schedule counting optimizer updates (OneCycleLR's
    `total_steps`) needs epochs x steps per process / `accumulate`, not the single-process count.

    Args:
        batch_size: Samples a batch in one process (None when unknown).
        steps_per_epoch: Batches an epoch in one process (None when unknown).
        processes: Processes training together.
        accumulate: Batches an optimizer update (`accumulate_grad_batches`).
        total_epochs: Epochs of the run, for the run's count of updates.
    """
    if batch_size is None:
        size = "batch size unknown"
    elif processes > 1:
        size = f"{batch_size} samples a batch in each of {processes} processes ({batch_size * processes} a step in all)"
    else:
        size = f"{batch_size} samples a batch"
    if accumulate > 1 and batch_size is not None:
        size += f", {batch_size * processes * accumulate} an optimizer update ({accumulate} batches)"
    if steps_per_epoch is None:
        return f"Batches: {size}; steps an epoch unknown"
    where = " in each process" if processes > 1 else ""
    updates = math.ceil(steps_per_epoch / accumulate)
    line = f"Batches: {size}; {steps_per_epoch} batches an epoch{where}"
    if accumulate > 1:
        line += f", {updates} optimizer updates"
    if total_epochs is not None:
        line += f"; {updates * total_epochs} optimizer updates in {total_epochs} epochs (a schedule's `total_steps`)"
    return line


def log_batches(
    batch_size: int | None,
    steps_per_epoch: int | None,
    *,
    processes: int = 1,
    accumulate: int = 1,
    total_epochs: int | None = None,
) -> None:
    """Log `format_batches(...)` on the main process, console included."""
    line = format_batches(
        batch_size, steps_per_epoch, processes=processes, accumulate=accumulate, total_epochs=total_epochs
    )
    _log(logging.INFO, line)


def batch_size_of(data: object) -> int | None:
    """The batch size a data source declares (a torchmanager `Dataset`, a `DataLoader`), else None."""
    size = getattr(data, "batch_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None
