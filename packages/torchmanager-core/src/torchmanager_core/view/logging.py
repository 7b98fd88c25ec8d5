"""Upstream torchmanager 1.5's `torchmanager_core.view.logging`: the standard `logging` names, plus the
"torchmanager" logger, `add_console` and `set_log_path`.

Upstream code builds its handlers from here (`view.logging.StreamHandler()`, `view.logging.INFO`).
"""

from __future__ import annotations

import logging as _logging
from logging import *  # noqa: F403

from ..run_log import add_console, logger

__all__ = [*_logging.__all__, "add_console", "logger", "set_log_path"]

if logger.level == _logging.NOTSET:
    logger.setLevel(_logging.INFO)  # upstream's level, which the handlers its users add rely on

_log_file: _logging.FileHandler | None = None


def set_log_path(log_path: str) -> _logging.Formatter:
    """Also write the "torchmanager" logger's INFO records to the file `log_path` (one file at a time).

    Calling it again moves the logging to the new file. Returns the records' formatter (the message alone).
    """
    global _log_file
    formatter = _logging.Formatter("%(message)s")
    if _log_file is not None:
        logger.removeHandler(_log_file)
        _log_file.close()
    _log_file = _logging.FileHandler(log_path)
    _log_file.setLevel(_logging.INFO)
    _log_file.setFormatter(formatter)
    logger.addHandler(_log_file)
    return formatter
