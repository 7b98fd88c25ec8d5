"""torchmanager: a generic deep learning training/testing framework for PyTorch.

`torchmanager.Manager(model, optimizer, loss_fn=..., metrics=...)` with `fit` and `test`; the
components are re-exported as `torchmanager.losses`, `.metrics`, `.data`, `.callbacks` and
`.configs` (each is also its own distribution, e.g. `torchmanager_losses`).
"""

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
    version,
)
from torchmanager_core.version import API_VERSION, VERSION

from . import callbacks, configs, data, losses, metrics
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
    "__version__",
    "callbacks",
    "configs",
    "data",
    "distributed",
    "errors",
    "losses",
    "metrics",
    "random",
    "version",
]
