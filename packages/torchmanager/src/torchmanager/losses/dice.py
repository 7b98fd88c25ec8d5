"""Upstream torchmanager 1.5's module path `torchmanager.losses.dice`."""

from torchmanager_losses import Dice

__all__ = ["Dice"]
