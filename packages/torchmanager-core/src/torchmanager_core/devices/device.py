"""Upstream torchmanager 1.5's module path `torchmanager_core.devices.device`."""

from ..protocols import DataParallelType, DeviceMovable
from . import CPU, data_parallel, empty_cache, move_to_device, search, set_default

__all__ = [
    "CPU",
    "DataParallelType",
    "DeviceMovable",
    "data_parallel",
    "empty_cache",
    "move_to_device",
    "search",
    "set_default",
]
