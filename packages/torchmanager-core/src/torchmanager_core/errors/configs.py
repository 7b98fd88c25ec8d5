"""Upstream torchmanager 1.5's module path `torchmanager_core.errors.configs`."""

from . import ConfigsFormatError

__all__ = ["ConfigsFormatError"]
