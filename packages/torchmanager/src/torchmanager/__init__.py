"""torchmanager: a generic deep learning training/testing framework for PyTorch.

`torchmanager.Manager(model, optimizer, loss_fn=..., metrics=...)` with `fit` and `test`; the
components are re-exported as `torchmanager.losses`, `.metrics`, `.data`, `.callbacks` and
`.configs` (each is also its own distribution, e.g. `torchmanager_losses`). Upstream torchmanager
1.5's module paths (`torchmanager.losses.loss`, `torchmanager.metrics.metric`, `torchmanager.training`...)
re-export the same objects.
"""

from typing import Any

from torchmanager_core import (
    BaseTestingManager,
    BaseTrainingManager,
    BasicTestingManager,
    BasicTrainingManager,
    Manager,
    TestingManager,
    TrainingManager,
    distributed,
    errors,
    random,
)
from torchmanager_core import version as _version_module
from torchmanager_core.progress import VerboseType
from torchmanager_core.version import API_VERSION, VERSION, Version

from . import basic, callbacks, configs, data, losses, metrics, testing, training
from .__about__ import __version__

__all__ = [
    "API_VERSION",
    "VERSION",
    "BaseTestingManager",
    "BaseTrainingManager",
    "BasicTestingManager",
    "BasicTrainingManager",
    "Manager",
    "TestingManager",
    "TrainingManager",
    "VerboseType",
    "__version__",
    "basic",
    "callbacks",
    "configs",
    "data",
    "distributed",
    "errors",
    "losses",
    "metrics",
    "random",
    "testing",
    "training",
    "version",
]


class _PackageVersion(Version):
    """This torchmanager's version, which also gives the names of `torchmanager_core.version`.

    Upstream's `torchmanager.version` was the version itself (`torchmanager.version >= "1.1.0"`);
    ours was the version module (`torchmanager.version.VERSION`); this object is both.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_version_module, name)


version: Version = _PackageVersion(VERSION)
"""This torchmanager's `Version`, comparable with strings; `version.VERSION`, `version.deprecated`... as the module."""
