"""Upstream torchmanager 1.5's module path `torchmanager.configs.json`."""

from torchmanager_core.configs import JSONConfigs

__all__ = ["JSONConfigs"]
