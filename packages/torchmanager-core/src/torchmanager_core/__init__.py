"""torchmanager-core: the managers and their loop, devices, checkpoints, progress and logging.

`Manager(model, optimizer, loss_fn, metrics).fit(...)` trains, `.test(...)` evaluates. Core
depends on torch, tqdm and packaging only: losses and metrics are any callables (see `protocols`).
"""

from . import callbacks, checkpoint, configs, devices, distributed, errors, preemption, protocols, random, version
from .__about__ import __version__
from .callbacks import Callback, CallbackList
from .errors import StopTraining
from .testing import BaseTestingManager, BasicTestingManager, TestingManager
from .training import BaseTrainingManager, BasicTrainingManager, Manager, TrainingManager
from .version import API_VERSION, VERSION

__all__ = [
    "API_VERSION",
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
    "__version__",
    "callbacks",
    "checkpoint",
    "configs",
    "devices",
    "distributed",
    "errors",
    "preemption",
    "protocols",
    "random",
    "version",
]
