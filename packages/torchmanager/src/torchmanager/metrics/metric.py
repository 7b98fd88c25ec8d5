"""Upstream torchmanager 1.5's module path `torchmanager.metrics.metric`."""

from torchmanager_metrics import BaseMetric, Metric, metric, metric_fn

__all__ = ["BaseMetric", "Metric", "metric", "metric_fn"]
