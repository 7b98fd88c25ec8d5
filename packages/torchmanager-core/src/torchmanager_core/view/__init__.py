"""Upstream torchmanager 1.5's `torchmanager_core.view`: the "torchmanager" logger, tqdm and warnings.

Code written for upstream logs through `view.logger`, draws bars with `view.tqdm` and warns with
`view.warnings`. Importing this module gives the logger upstream's INFO level if nobody has set one,
so the handlers such code adds to `view.logger` print the epoch summaries (new code calls
`torchmanager_core.progress.add_console`, or passes `show_verbose=True`).
"""

import warnings as warnings

from tqdm import tqdm as tqdm

from . import logging as logging
from .logging import add_console, logger, set_log_path
from .protocols import VerboseControllable, VerboseType

__all__ = [
    "VerboseControllable",
    "VerboseType",
    "add_console",
    "logger",
    "logging",
    "set_log_path",
    "tqdm",
    "warnings",
]
