"""Upstream torchmanager 1.5's module path `torchmanager_core.errors.train`."""

from . import LossError, MetricError, StopTraining

__all__ = ["LossError", "MetricError", "StopTraining"]
