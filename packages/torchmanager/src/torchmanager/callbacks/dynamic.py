"""Upstream torchmanager 1.5's module path `torchmanager.callbacks.dynamic`."""

from torchmanager_callbacks import DynamicWeight, LambdaDynamicWeight

__all__ = ["DynamicWeight", "LambdaDynamicWeight"]
