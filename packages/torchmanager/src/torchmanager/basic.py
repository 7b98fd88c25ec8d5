"""Upstream torchmanager 1.5's module path `torchmanager.basic`: `BaseManager`, the root of the managers."""

from torchmanager_core import BasicTestingManager as BaseManager

__all__ = ["BaseManager"]
