"""Upstream torchmanager 1.5's module path `torchmanager.training` (its `Manager` is `TrainingManager`)."""

from torchmanager_core import BaseTrainingManager
from torchmanager_core import TrainingManager as Manager

__all__ = ["BaseTrainingManager", "Manager"]
