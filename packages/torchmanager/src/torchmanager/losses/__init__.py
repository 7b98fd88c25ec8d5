"""`torchmanager.losses`: the public API of torchmanager-losses (`torchmanager_losses`), re-exported.

Upstream 1.5's module paths load with it (`torchmanager.losses.loss`, ...); `loss` stays the decorator.
"""

from torchmanager_losses import *  # noqa: F403
from torchmanager_losses import __all__ as __all__

from .._module_paths import load_module_paths

load_module_paths(__name__, "cross_entropy", "dice", "loss", "mse", "protocols")
