"""List every public name and module path upstream torchmanager 1.5 exposes, for tests/test_upstream_names.py.

Run it once with a Python that has upstream `torchmanager==1.5` installed (with tensorboard and
PyYAML too, which upstream imports when present), never with ours:

    /tmp/up15/bin/python scripts/upstream_names.py > tests/data/upstream15_names.txt

One line per name: `module <path>` for every module under `torchmanager` and `torchmanager_core`,
`class <path>` for a class upstream defines, `name <path>` for anything else; a third column, when
present, is the shortest path of the same upstream class or function (`class
torchmanager.losses.loss.Loss torchmanager.losses.Loss`): the two must be one object here too. A module's public
names are its `__all__`, plus what it binds itself at top level (`version = VERSION`), plus
what it re-exports with `from x import *` (`torchmanager_core.typing`, `.view.logging`); names it
merely imports for its own use (`torch`, `Any` in a module without `__all__`) and its type
variables are left out, unless they come from upstream itself (`torchmanager_core.protocols.WrappedFn`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import types
import warnings

ROOTS = ("torchmanager_core", "torchmanager")
PRIVATE_NAMES_IN_USE = {"torchmanager_core": ["_raise"]}
"""Private names that public projects built on upstream import (`from torchmanager_core import _raise`)."""


def _is_upstream(value: object) -> bool:
    if isinstance(value, types.ModuleType):
        return value.__name__.split(".")[0] in ROOTS
    owner = value if inspect.isclass(value) or callable(value) else type(value)
    module = getattr(owner, "__module__", None) or ""
    return module.split(".")[0] in ROOTS


def _is_foreign_module(value: object) -> bool:
    """`linalg` in `try: from scipy import linalg except: linalg = NotImplemented` is upstream's plumbing."""
    return isinstance(value, types.ModuleType) and not _is_upstream(value)


def _top_level_bindings(module: types.ModuleType) -> tuple[set[str], set[str], list[str]]:
    """Names the module's source binds itself, names it imports, and the modules it star-imports."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):  # an empty file
        return set(), set(), []
    own: set[str] = set()
    imported: set[str] = set()
    star: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    star.append(importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__))
                else:
                    imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Try):  # upstream's optional imports: `try: from x import y except: y = ...`
            tried: set[str] = set()
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    tried.update(alias.asname or alias.name for alias in inner.names)
                elif isinstance(inner, ast.Import):
                    tried.update((alias.asname or alias.name).split(".")[0] for alias in inner.names)
            imported.update(tried)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign):
                    bound = {n.id for t in inner.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                    own.update(bound - tried)  # `y = NotImplemented` stands in for an import
    return own, imported, star


def public_names(module: types.ModuleType) -> list[str]:
    own, imported, star = _top_level_bindings(module)
    names = set(getattr(module, "__all__", ()))
    names.update(
        name for name in own if not name.startswith("_") and not _is_foreign_module(getattr(module, name, None))
    )
    for source in star:
        exporter = importlib.import_module(source)
        names.update(getattr(exporter, "__all__", [n for n in vars(exporter) if not n.startswith("_")]))
    if not hasattr(module, "__all__"):
        names.update(
            name for name in imported if not name.startswith("_") and _is_upstream(getattr(module, name, None))
        )
    names.update(PRIVATE_NAMES_IN_USE.get(module.__name__, []))
    return sorted(name for name in names if hasattr(module, name) and not _is_type_variable(getattr(module, name)))


def _is_type_variable(value: object) -> bool:
    """A module's `T = TypeVar("T")` is how it writes its annotations, not something to import."""
    return type(value).__name__ in ("TypeVar", "ParamSpec", "TypeVarTuple")


def walk() -> list[str]:
    modules: list[types.ModuleType] = []
    for root in ROOTS:
        package = importlib.import_module(root)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{root}."):
            modules.append(importlib.import_module(info.name))
    module_names = {m.__name__ for m in modules}
    entries: dict[str, tuple[str, object]] = {m.__name__: ("module", m) for m in modules}
    for module in modules:
        for name in public_names(module):
            path = f"{module.__name__}.{name}"
            if path in module_names:
                continue  # listed as a module
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                kind = "module" if _is_upstream(value) else "name"
            else:
                kind = "class" if inspect.isclass(value) and _is_upstream(value) else "name"
            entries[path] = (kind, value)
    # where upstream gives one of its own classes or functions several paths, say which: ours must too
    first_path: dict[int, str] = {}
    for path in sorted(entries, key=lambda p: (p.count("."), p)):
        kind, value = entries[path]
        if kind != "module" and (inspect.isclass(value) or inspect.isfunction(value)) and _is_upstream(value):
            first_path.setdefault(id(value), path)
    lines = []
    for path in sorted(entries):
        kind, value = entries[path]
        same = first_path.get(id(value), path) if kind != "module" else path
        lines.append(f"{kind} {path}" + (f" {same}" if same != path else ""))
    return lines


def main() -> None:
    warnings.simplefilter("ignore")
    import torchmanager

    print(f"# Public names of upstream torchmanager {torchmanager.version} (torch {sys.modules['torch'].__version__}),")
    print("# generated by scripts/upstream_names.py; regenerate rather than edit.")
    for line in walk():
        print(line)


if __name__ == "__main__":
    main()
