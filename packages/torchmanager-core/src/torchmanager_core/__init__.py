"""torchmanager-core: the managers and their loop, devices, checkpoints, progress and logging.

`Manager(model, optimizer, loss_fn, metrics).fit(...)` trains, `.test(...)` evaluates. Core
depends on torch, tqdm and packaging only: losses and metrics are any callables (see `protocols`).

Code written for upstream torchmanager 1.5 imports modules through this package
(`from torchmanager_core import abc, os, torch, view, _raise`); those names are looked up on first
use, so importing core stays fast, and `tensorboard` and `yaml` are imported only when read (each
is `NotImplemented` when not installed, as upstream had it; a star import leaves both out).
"""

from typing import TYPE_CHECKING, Any

from . import (
    callbacks,
    checkpoint,
    configs,
    devices,
    distributed,
    errors,
    preemption,
    protocols,
    random,
    strategy,
    version,
)
from .__about__ import __version__
from .callbacks import Callback, CallbackList
from .compat import (
    BaseTestingManager,
    BaseTrainingManager,
    BasicTestingManager,
    BasicTrainingManager,
    TestingManager,
    TrainingManager,
)
from .errors import StopTraining, raise_error
from .errors import _raise as _raise
from .manager import Manager
from .version import API_VERSION, DESCRIPTION, VERSION, Version, deprecated

__all__ = [
    "API_VERSION",
    "DESCRIPTION",
    "VERSION",
    "BaseTestingManager",
    "BaseTrainingManager",
    "BasicTestingManager",
    "BasicTrainingManager",
    "Callback",
    "CallbackList",
    "Manager",
    "StopTraining",
    "TestingManager",
    "TrainingManager",
    "Version",
    "__version__",
    "abc",
    "argparse",
    "backward",
    "callbacks",
    "checkpoint",
    "configs",
    "copy",
    "data",
    "deprecated",
    "devices",
    "distributed",
    "errors",
    "functional",
    "gc",
    "json",
    "math",
    "os",
    "platform",
    "preemption",
    "protocols",
    "raise_error",
    "random",
    "shutil",
    "strategy",
    "sys",
    "torch",
    "version",
    "view",
]

_UPSTREAM_MODULES = {
    "abc": "abc",
    "argparse": "argparse",
    "copy": "copy",
    "gc": "gc",
    "json": "json",
    "math": "math",
    "os": "os",
    "platform": "platform",
    "shutil": "shutil",
    "sys": "sys",
    "torch": "torch",
    "functional": "torch.nn.functional",
    "data": "torch.utils.data",
    "backward": f"{__name__}.backward",
    "typing": f"{__name__}.typing",
    "view": f"{__name__}.view",
}
"""Modules upstream 1.5 re-exported from `torchmanager_core`, by the name it gave them."""

_UPSTREAM_OPTIONAL = {"tensorboard": "torch.utils.tensorboard", "yaml": "yaml"}
"""Optional modules upstream re-exported, `NotImplemented` when not installed."""

if TYPE_CHECKING:
    import abc
    import argparse
    import copy
    import gc
    import json
    import math
    import os
    import platform
    import shutil
    import sys
    from types import ModuleType

    import torch
    from torch.nn import functional
    from torch.utils import data

    from . import backward, view
    from . import typing as typing

    tensorboard: ModuleType
    yaml: ModuleType
else:

    def __getattr__(name: str) -> Any:
        """Import an upstream re-export when it is first read, and keep it."""
        import importlib

        if name in _UPSTREAM_MODULES:
            value = importlib.import_module(_UPSTREAM_MODULES[name])
        elif name in _UPSTREAM_OPTIONAL:
            try:
                value = importlib.import_module(_UPSTREAM_OPTIONAL[name])
            except ImportError:
                value = NotImplemented
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value
