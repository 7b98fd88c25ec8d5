"""torchmanager-metrics: streaming metrics for PyTorch, usable alone or with torchmanager.

Every metric is a `torch.nn.Module` called on batches as `metric(input, target)`; its `result`
is the exact value over all batches since `reset()`.
"""

from .__about__ import __version__
from .metric import Metric, MetricFn, Reduction, batch_size, metric, metric_fn

__all__ = ["Metric", "MetricFn", "Reduction", "__version__", "batch_size", "metric", "metric_fn"]
