"""Upstream torchmanager 1.5's module path `torchmanager_core.version.errors`."""

from . import CURRENT, VersionError

__all__ = ["CURRENT", "VersionError"]
