"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.experiment`."""

from torchmanager_callbacks import Experiment

__all__ = ["Experiment"]
