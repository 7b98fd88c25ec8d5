"""Upstream torchmanager 1.5's module path `torchmanager.metrics.conf_mat`."""

from typing import Any

from torchmanager_core.version import warn_upstream_name
from torchmanager_metrics import BinaryConfusionMatrix, ConfusionMatrix

__all__ = ["BinaryConfusionMatrix", "BinaryConfusionMetric", "ConfusionMatrix"]


def BinaryConfusionMetric(*args: Any, **kwargs: Any) -> BinaryConfusionMatrix:  # upstream's spelling
    """Upstream's former name of `BinaryConfusionMatrix` (warns once, then makes one)."""
    warn_upstream_name(
        "torchmanager.metrics.conf_mat.BinaryConfusionMetric", "`torchmanager.metrics.BinaryConfusionMatrix`"
    )
    return BinaryConfusionMatrix(*args, **kwargs)
