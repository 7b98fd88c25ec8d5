"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.early_stop`."""

from torchmanager_callbacks import EarlyStop

__all__ = ["EarlyStop"]
