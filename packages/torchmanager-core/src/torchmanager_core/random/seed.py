"""Upstream torchmanager 1.5's module path `torchmanager_core.random.seed`."""

from . import freeze_seed, unfreeze_seed

__all__ = ["freeze_seed", "unfreeze_seed"]
