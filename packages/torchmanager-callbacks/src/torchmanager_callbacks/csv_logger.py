"""`CSVLogger`: one row of summary values per epoch in a CSV file."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping

import torch

from torchmanager_core.callbacks import Callback, merge_summaries

from ._io import check_output_path, is_writer

__all__ = ["CSVLogger"]

_logger = logging.getLogger("torchmanager")


class CSVLogger(Callback):
    """Writes `epoch` (0-based, as the hooks), the training values and the "val_"-prefixed validation values.

    The columns are those of the first row written; a later missing value is left empty, and a new
    key is left out (with one warning). Each row is flushed when written. Only the main process writes.

    Args:
        filename: The CSV file; its folder is created if needed.
        separator: The field separator.
        append: Add rows to an existing file (keeping its columns) instead of starting it again;
            use it when resuming.
    Raises:
        ValueError: `filename` is a folder or in a folder that cannot be written, or `separator` is
            not one character.
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"`separator` must be one character. Received: separator={separator!r}")
        self.filename = check_output_path(filename, "filename")
        self.separator = separator
        self.append = append
        self._columns: list[str] | None = None
        self._warned = False

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._columns = None
        if not is_writer():
            return
        if self.append and os.path.isfile(self.filename) and os.path.getsize(self.filename) > 0:
            with open(self.filename, newline="") as file:
                self._columns = next(csv.reader(file, delimiter=self.separator), None)
        else:
            open(self.filename, "w").close()

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if not is_writer():
            return
        row = {"epoch": epoch, **merge_summaries(summary, val_summary)}
        new_file = self._columns is None
        if self._columns is None:
            self._columns = list(row)
        extra = [key for key in row if key not in self._columns]
        if extra and not self._warned:
            self._warned = True
            _logger.warning(f"CSVLogger: values {extra} are not in the columns of {self.filename} and are left out")
        with open(self.filename, "a", newline="") as file:
            writer = csv.DictWriter(file, self._columns, delimiter=self.separator, extrasaction="ignore", restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._warned = False
