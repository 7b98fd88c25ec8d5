"""`torchmanager.metrics`: the public API of torchmanager-metrics (`torchmanager_metrics`), re-exported.

Upstream 1.5's module paths load with it (`torchmanager.metrics.metric`, ...). As in 1.5,
`metric` is the decorator and `accuracy` the module `torchmanager.metrics.accuracy` (whose
`accuracy.accuracy` is `torchmanager_metrics.accuracy`, the one-batch function).
"""

from torchmanager_metrics import *  # noqa: F403
from torchmanager_metrics import __all__ as __all__

from .._module_paths import load_module_paths

load_module_paths(__name__, "conf_mat", "extractor", "iou", "lpips", "metric", "similarity", modules=("accuracy",))
