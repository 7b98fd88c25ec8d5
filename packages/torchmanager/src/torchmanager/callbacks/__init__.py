"""`torchmanager.callbacks`: the public API of torchmanager-callbacks (`torchmanager_callbacks`), re-exported."""

from torchmanager_callbacks import *  # noqa: F403
from torchmanager_callbacks import __all__ as __all__
