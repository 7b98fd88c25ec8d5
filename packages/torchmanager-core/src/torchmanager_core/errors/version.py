"""Upstream torchmanager 1.5's module path `torchmanager_core.errors.version`."""

from . import VersionError

__all__ = ["VersionError"]
