"""Upstream torchmanager 1.5's module path `torchmanager.losses.protocols`."""

from torchmanager_metrics import BaseMetric, Metric

__all__ = ["BaseMetric", "Metric"]
