"""`CSVLogger`: one row of summary values per epoch in a CSV file (and, if asked, one every N optimizer steps)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from torchmanager_core.callbacks import Callback
from torchmanager_core.tracking import merge_summaries

from ._hooks import select_hooks
from ._io import check_output_path, is_writer
from ._state import get_state, put_state
from .steps import EveryNSteps, scalar_floats

__all__ = ["CSVLogger"]

_logger = logging.getLogger("torchmanager")


class CSVLogger(Callback):
    """Writes `epoch` (counted from 1, as the log's "Epoch 4/10"; the hooks' `epoch` is the 0-based index), the training values and the "val_"-prefixed validation values.

    The columns are those of the first row written; a later missing value is left empty, and a new
    key is left out (with one warning). Each row is flushed when written. Only the main process writes.
    A checkpoint keeps how much of each file was written; a run resumed from it continues the files
    (whatever `append` says) and first cuts what was written after the checkpoint, so that no epoch
    or step has two rows.
    With `log_every_n_steps=N` it also writes, every N optimizer updates, a row of the batch's values
    to `steps_filename` (default: `<filename stem>_steps.csv`), with the columns `step` (the run's
    global step), `epoch`, `batch` and the values; those are read from the device only then.

    Args:
        filename: The CSV file; its folder is created if needed.
        separator: The field separator.
        append: Add rows to existing files (keeping their columns) instead of starting them again (a
            resumed run always continues its files).
        log_every_n_steps: Also write per-step rows every this many optimizer updates (None: none).
        steps_filename: The CSV file of the per-step rows.
    Raises:
        ValueError: `filename` is a folder or in a folder that cannot be written, `separator` is not
            one character, or `log_every_n_steps` is not an int >= 1.
    """

    def __init__(
        self,
        filename: str,
        separator: str = ",",
        append: bool = False,
        *,
        log_every_n_steps: int | None = None,
        steps_filename: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"`separator` must be one character. Received: separator={separator!r}")
        self.filename = check_output_path(filename, "filename")
        self.separator = separator
        self.append = append
        self._steps = EveryNSteps(log_every_n_steps)
        stem, _ = os.path.splitext(self.filename)
        self.steps_filename = check_output_path(steps_filename or f"{stem}_steps.csv", "steps_filename")
        self._epochs = _Table(self.filename, separator)
        self._step_rows = _Table(self.steps_filename, separator)
        self._resumed_sizes: dict[str, int] | None = None  # from a checkpoint, until training starts
        if log_every_n_steps is None:
            select_hooks(self, CSVLogger, {"on_batch_end"})

    def _tables(self) -> list[_Table]:
        return [self._epochs] if self._steps.n is None else [self._epochs, self._step_rows]

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._steps.start(self.manager)
        sizes, self._resumed_sizes = self._resumed_sizes, None
        if is_writer():
            for table in self._tables():
                if sizes is not None:
                    table.resume(sizes.get(table.filename, 0))
                else:
                    table.start(self.append)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        put_state(checkpoint, self, {"sizes": {table.filename: table.size() for table in self._tables()}})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None:
            self._resumed_sizes = {str(name): int(size) for name, size in state.get("sizes", {}).items()}

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = self._steps.due(self.manager)
        if step is not None and is_writer():
            epoch = getattr(self.manager, "current_epoch", None)
            epoch = epoch + 1 if isinstance(epoch, int) else epoch  # counted from 1, as the log's "Epoch 4/10"
            self._step_rows.write({"step": step, "epoch": epoch, "batch": batch, **scalar_floats(summary)})

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if is_writer():
            self._epochs.write({"epoch": epoch + 1, **merge_summaries(summary, val_summary)})

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._epochs.warned = self._step_rows.warned = False


class _Table:
    """One CSV file: its columns (those of its first row), one flushed row at a time."""

    def __init__(self, filename: str, separator: str) -> None:
        self.filename, self.separator = filename, separator
        self.columns: list[str] | None = None
        self.warned = False

    def start(self, append: bool) -> None:
        self.columns = None
        if append and self.size() > 0:
            self._read_columns()
        else:
            open(self.filename, "w").close()

    def resume(self, size: int) -> None:
        """Continue the file as it was `size` bytes long (what a checkpoint saw): later rows are cut."""
        self.columns = None
        if self.size() > size:
            os.truncate(self.filename, size)
        elif self.size() < size:
            _logger.warning(
                f"CSVLogger: {self.filename} is shorter than when the checkpoint was saved ({size} bytes); rows "
                "are added after what it holds"
            )
        if self.size() > 0:
            self._read_columns()

    def size(self) -> int:
        """The file's length in bytes (0 when it does not exist)."""
        return os.path.getsize(self.filename) if os.path.isfile(self.filename) else 0

    def _read_columns(self) -> None:
        with open(self.filename, newline="") as file:
            self.columns = next(csv.reader(file, delimiter=self.separator), None)

    def write(self, row: Mapping[str, Any]) -> None:
        new_file = self.columns is None
        if self.columns is None:
            self.columns = list(row)
        extra = [key for key in row if key not in self.columns]
        if extra and not self.warned:
            self.warned = True
            _logger.warning(f"CSVLogger: values {extra} are not in the columns of {self.filename} and are left out")
        with open(self.filename, "a", newline="") as file:
            writer = csv.DictWriter(file, self.columns, delimiter=self.separator, extrasaction="ignore", restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
