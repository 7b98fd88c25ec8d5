"""Upstream torchmanager 1.5's manager class names, for code written for it: each is `Manager`.

Upstream had a diamond of four classes (a testing base, a training base, and two defaults); ours
is one class with default steps, so every name is that class: `issubclass(TrainingManager,
TestingManager)` holds, a subclass of `BasicTrainingManager` that defines its steps runs them, and
one of `TestingManager` that defines `test_step` tests without an optimizer.
"""

from __future__ import annotations

from .manager import Manager

__all__ = [
    "BaseTestingManager",
    "BaseTrainingManager",
    "BasicTestingManager",
    "BasicTrainingManager",
    "Manager",
    "TestingManager",
    "TrainingManager",
]

TrainingManager = Manager
"""Upstream's name of the default manager (`torchmanager.training.Manager`)."""

TestingManager = Manager
"""Upstream's testing manager (`torchmanager.testing.Manager`): any manager tests."""

BasicTrainingManager = BaseTrainingManager = Manager
"""Upstream's training base class (README and code spellings): override `train_step` and `test_step`."""

BasicTestingManager = BaseTestingManager = Manager
"""Upstream's testing base class (README and code spellings): override `test_step`."""
