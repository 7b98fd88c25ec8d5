"""Upstream torchmanager 1.5's module path `torchmanager_core.devices.protocols`."""

from ..protocols import DataParallelable, DataParallelType, DeviceMovable

__all__ = ["DataParallelType", "DataParallelable", "DeviceMovable"]
