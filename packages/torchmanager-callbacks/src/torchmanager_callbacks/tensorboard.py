"""`TensorBoard`: write every summary value, training and validation, to TensorBoard event files.

tensorboard is imported when the callback is created, never when the package is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch

from ._hooks import select_hooks
from ._io import is_writer
from ._state import get_state, put_state
from .frequency import Frequency, FrequencyCallback, check_frequency
from .steps import EveryNSteps, scalar_floats

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.writer import FileWriter

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
    Only the main process writes. A resumed run goes on with the steps after its checkpoint, and
    what the interrupted run wrote after the checkpoint is purged (TensorBoard's `purge_step`: the
    event files get a restart mark, and TensorBoard hides the earlier points from that step on), so
    no step is shown twice.

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
        self._resumed_global_step: int | None = None  # from a checkpoint, until training starts
        self._purge: tuple[int, int] | None = None  # the first chart step and global step written again

    @property
    def writer(self) -> SummaryWriter:
        """The `SummaryWriter` (created on first use), for writing more than the summaries."""
        if self._writer is None:
            purge = self._purge[1] if self._purge is not None else None
            self._writer = self._writer_class(self.log_dir, purge_step=purge)
        return self._writer

    def _add_scalars(self, key: str, values: Mapping[str, float], step: int) -> None:
        """`SummaryWriter.add_scalars`'s layout (a chart `key`, one folder `<key>_<line>` a line), each line's
        file starting with the restart mark of a resumed run."""
        from torch.utils.tensorboard.summary import scalar
        from torch.utils.tensorboard.writer import FileWriter

        # the writer's files by folder, made with the writer (`close` drops the writer too)
        writers = cast("dict[str, FileWriter]", self.writer.all_writers)
        for line, value in values.items():
            folder = f"{self.log_dir}/{key.replace('/', '_')}_{line}"
            if folder not in writers:
                writers[folder] = FileWriter(folder, self.writer.max_queue, self.writer.flush_secs)
                if self._purge is not None:
                    _mark_restart(writers[folder], self._purge[0])
            writers[folder].add_summary(scalar(key, value), step)  # type: ignore[no-untyped-call]

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
            self._add_scalars(key, values, step)
        if self.freq is Frequency.EPOCH:
            self.writer.flush()

    def on_train_start(self, initial_epoch: int = 0) -> None:
        super().on_train_start(initial_epoch)
        self._steps.start(self.manager)
        resumed, self._resumed_global_step = self._resumed_global_step, None
        if resumed is not None:  # the files the run writes from now on start with a restart mark
            self.close()
            self._purge = (self.current_step + 1, resumed + 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        step = getattr(self.manager, "global_step", None)
        put_state(checkpoint, self, {"current_step": self.current_step, "global_step": step or 0})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None:
            self.current_step = int(state["current_step"])
            self._resumed_global_step = int(state["global_step"])

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


def _mark_restart(writer: FileWriter, step: int) -> None:
    """Write TensorBoard's restart mark (what `SummaryWriter(purge_step=step)` writes in its main file): readers
    drop the points of this folder's earlier files from `step` on."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog  # type: ignore[import-untyped]

    writer.add_event(Event(step=step, file_version="brain.Event:2"))
    writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
