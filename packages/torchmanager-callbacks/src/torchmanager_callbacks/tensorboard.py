"""`TensorBoard`: write every summary value, training and validation, to TensorBoard event files.

tensorboard is imported when the callback is created, never when the package is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ._hooks import select_hooks
from ._io import is_writer
from .frequency import Frequency, FrequencyCallback, check_frequency
from .steps import EveryNSteps, scalar_floats

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoard", "import_summary_writer"]

EXTRA_HINT = 'pip install "torchmanager-callbacks[tensorboard]"'


def import_summary_writer() -> type[SummaryWriter]:
    """`torch.utils.tensorboard.SummaryWriter`, or an ImportError that says how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            f"`TensorBoard` and `Experiment` need the tensorboard package, which is not installed; install it with "
            f"`{EXTRA_HINT}` (or `pip install tensorboard`). Received: {error}"
        ) from error
    return SummaryWriter


class TensorBoard(FrequencyCallback):
    """Records each summary value with `SummaryWriter.add_scalars(name, {"train": ..., "val": ...}, step)`.

    As upstream, each value is a chart with a "train" and a "val" line (TensorBoard stores them in the
    subfolders `<name>_train` and `<name>_val` of `log_dir`). At epoch frequency the step is the
    number of completed epochs (1 after the first); at batch frequency it counts optimizer updates
    from `initial_step + 1` and reads the step's values, which waits for the device once per update.
    With `log_every_n_steps=N` (at epoch frequency) it also writes the batch values every N optimizer
    updates, as `step/<name>` at the run's global step, beside the per-epoch charts.
    Only the main process writes; a resumed run goes on with the steps after its checkpoint.

    Args:
        log_dir: The folder of the event files.
        freq: `Frequency.EPOCH` or `Frequency.BATCH`.
        initial_step: The first step at batch frequency.
        log_every_n_steps: Also write per-step points every this many optimizer updates (None: none).
    Raises:
        ImportError: tensorboard is not installed (the message names the pip extra).
        TypeError: `freq` is not a `Frequency`.
        ValueError: `freq` is a start frequency.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        freq: Frequency = Frequency.EPOCH,
        initial_step: int = 0,
        *,
        log_every_n_steps: int | None = None,
    ) -> None:
        check_frequency(freq, (Frequency.EPOCH, Frequency.BATCH))
        self._writer_class = import_summary_writer()
        self._steps = EveryNSteps(log_every_n_steps)
        super().__init__(freq, initial_step=initial_step)
        if log_every_n_steps is None:
            select_hooks(self, TensorBoard, {"on_batch_end"} if freq is Frequency.EPOCH else set(), self.unused_hooks)
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a folder path (str or os.PathLike). Received: log_dir={log_dir!r}")
        self.log_dir = os.fspath(log_dir)
        self._writer: SummaryWriter | None = None

    @property
    def writer(self) -> SummaryWriter:
        """The `SummaryWriter` (created on first use), for writing more than the summaries."""
        if self._writer is None:
            self._writer = self._writer_class(self.log_dir)
        return self._writer

    def add_graph(self, model: torch.nn.Module, input_shape: tuple[int, ...] | None = None) -> None:
        """Record the graph of `model`, traced on a random input of `input_shape` (None: no input)."""
        inputs = torch.randn(input_shape) if input_shape is not None else None
        self.writer.add_graph(model, input_to_model=inputs)

    def step(self, summary: Mapping[str, Any], val_summary: Mapping[str, float] | None = None) -> None:
        if not is_writer():
            return
        step = self.current_step + 1
        val_summary = val_summary or {}
        for key in dict.fromkeys([*summary, *val_summary]):
            values = {"train": float(summary[key])} if key in summary else {}
            if key in val_summary:
                values["val"] = float(val_summary[key])
            self.writer.add_scalars(key, values, step)
        if self.freq is Frequency.EPOCH:
            self.writer.flush()

    def on_train_start(self, initial_epoch: int = 0) -> None:
        super().on_train_start(initial_epoch)
        self._steps.start(self.manager)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        super().on_batch_end(batch, summary)
        step = self._steps.due(self.manager)
        if step is not None and is_writer():
            for key, value in scalar_floats(summary).items():
                self.writer.add_scalar(f"step/{key}", value, step)

    def on_train_end(self, model: torch.nn.Module) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event files (a later write opens new ones)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
