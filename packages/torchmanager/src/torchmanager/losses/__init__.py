"""`torchmanager.losses`: the public API of torchmanager-losses (`torchmanager_losses`), re-exported."""

from torchmanager_losses import *  # noqa: F403
from torchmanager_losses import __all__ as __all__
