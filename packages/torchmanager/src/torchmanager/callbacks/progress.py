"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.progress`."""

from torchmanager_callbacks import ProgressBar

__all__ = ["ProgressBar"]
