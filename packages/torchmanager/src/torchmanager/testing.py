"""Upstream torchmanager 1.5's module path `torchmanager.testing` (its `Manager` is `TestingManager`)."""

from torchmanager_core import BaseTestingManager
from torchmanager_core import TestingManager as Manager

__all__ = ["BaseTestingManager", "Manager"]
