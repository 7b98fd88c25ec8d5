"""`torchmanager.configs`: the configurations of torchmanager-core (`torchmanager_core.configs`), re-exported.

Upstream 1.5's module paths load with it (`torchmanager.configs.basic`, `.json`, `.yaml`; PyYAML
itself is imported when a file is read).
"""

from torchmanager_core.configs import *  # noqa: F403
from torchmanager_core.configs import __all__ as __all__

from .._module_paths import load_module_paths

load_module_paths(__name__, "basic", "json", "yaml")
