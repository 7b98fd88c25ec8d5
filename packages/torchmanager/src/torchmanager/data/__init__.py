"""`torchmanager.data`: the public API of torchmanager-data (`torchmanager_data`), re-exported.

Upstream 1.5's module paths load with it (`torchmanager.data.dataset`, `torchmanager.data.sliding`).
"""

from torchmanager_data import *  # noqa: F403
from torchmanager_data import __all__ as __all__

from .._module_paths import load_module_paths

load_module_paths(__name__, "dataset", "sliding")
