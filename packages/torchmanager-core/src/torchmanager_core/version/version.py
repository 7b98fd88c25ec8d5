"""Upstream torchmanager 1.5's module path `torchmanager_core.version.version`."""

from . import PreRelease, Version

__all__ = ["PreRelease", "Version"]
