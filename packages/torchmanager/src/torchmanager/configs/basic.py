"""Upstream torchmanager 1.5's module path `torchmanager.configs.basic`."""

from torchmanager_core.configs import BaseConfigs, Configs

__all__ = ["BaseConfigs", "Configs"]
