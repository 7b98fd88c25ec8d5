"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.ckpt`."""

from torchmanager_callbacks import BestCheckpoint, LastCheckpoint, MonitorType

__all__ = ["BestCheckpoint", "LastCheckpoint", "MonitorType"]
