"""`torchmanager.configs`: the configurations of torchmanager-core (`torchmanager_core.configs`), re-exported."""

from torchmanager_core.configs import *  # noqa: F403
from torchmanager_core.configs import __all__ as __all__
