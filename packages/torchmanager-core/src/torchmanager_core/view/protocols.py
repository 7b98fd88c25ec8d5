"""Upstream torchmanager 1.5's module path `torchmanager_core.view.protocols`."""

from ..progress import VerboseType
from ..protocols import VerboseControllable

__all__ = ["VerboseControllable", "VerboseType"]
