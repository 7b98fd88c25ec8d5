"""Upstream torchmanager 1.5's module path `torchmanager_core.version.deprecation`."""

from . import CURRENT, VersionError, VersionType, deprecated

__all__ = ["CURRENT", "VersionError", "VersionType", "deprecated"]
