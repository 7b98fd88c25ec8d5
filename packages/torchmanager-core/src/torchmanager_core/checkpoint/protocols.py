"""Upstream torchmanager 1.5's module path `torchmanager_core.checkpoint.protocols`."""

from ..protocols import ModelContainer, StateDictLoadable, WrappedFn
from .upstream import CkptDict

__all__ = ["CkptDict", "ModelContainer", "StateDictLoadable", "WrappedFn"]
