"""Upstream torchmanager 1.5's module paths of a subpackage, imported with it so that a later import changes nothing.

The import system binds a submodule's name in its package the first time the submodule loads:
with `torchmanager.metrics.metric` loaded lazily, `import torchmanager.metrics.metric` would turn
the package's `metric` decorator into the module. Upstream imported its submodules with the
package, so each name kept one meaning; here each subpackage does the same through
`load_module_paths`.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["load_module_paths"]

_UNBOUND = object()


def load_module_paths(package: str, *paths: str, modules: tuple[str, ...] = ()) -> None:
    """Import the submodules `paths` of `package` now, binding each name as upstream 1.5 did.

    A name the package already binds keeps its value: upstream's `torchmanager.metrics.metric` and
    `torchmanager.losses.loss` were the decorators, their modules importable by path only. The
    names in `modules` are bound to their modules instead (upstream's `torchmanager.metrics.accuracy`).
    """
    namespace = vars(sys.modules[package])
    for path in (*paths, *modules):
        bound = namespace.get(path, _UNBOUND)
        module = importlib.import_module(f"{package}.{path}")
        namespace[path] = module if path in modules or bound is _UNBOUND else bound
