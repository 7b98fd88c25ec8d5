"""Upstream torchmanager 1.5's module path `torchmanager_core.version.details`."""

from . import API, CURRENT, DESCRIPTION, Version

__all__ = ["API", "CURRENT", "DESCRIPTION", "Version"]
