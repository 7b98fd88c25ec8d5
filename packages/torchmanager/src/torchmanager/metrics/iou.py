"""Upstream torchmanager 1.5's module path `torchmanager.metrics.iou`."""

from torchmanager_metrics import InstanceIoU, MeanIoU

__all__ = ["InstanceIoU", "MeanIoU"]
