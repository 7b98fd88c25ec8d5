"""`torchmanager.data`: the public API of torchmanager-data (`torchmanager_data`), re-exported."""

from torchmanager_data import *  # noqa: F403
from torchmanager_data import __all__ as __all__
