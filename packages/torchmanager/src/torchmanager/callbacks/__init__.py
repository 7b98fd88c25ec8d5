"""`torchmanager.callbacks`: the public API of torchmanager-callbacks (`torchmanager_callbacks`), re-exported.

Upstream 1.5's module paths load with it (`torchmanager.callbacks.ckpt`, ...).
"""

from torchmanager_callbacks import *  # noqa: F403
from torchmanager_callbacks import __all__ as __all__

from .._module_paths import load_module_paths

load_module_paths(
    __name__, "callback", "ckpt", "dynamic", "early_stop", "experiment", "functional", "lr", "progress", "tensorboard"
)
