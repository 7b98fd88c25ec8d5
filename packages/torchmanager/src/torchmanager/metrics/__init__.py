"""`torchmanager.metrics`: the public API of torchmanager-metrics (`torchmanager_metrics`), re-exported."""

from torchmanager_metrics import *  # noqa: F403
from torchmanager_metrics import __all__ as __all__
