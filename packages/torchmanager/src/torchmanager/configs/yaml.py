"""Upstream torchmanager 1.5's module path `torchmanager.configs.yaml` (PyYAML is imported when a file is read)."""

from torchmanager_core.configs import YAMLConfigs

__all__ = ["YAMLConfigs"]
