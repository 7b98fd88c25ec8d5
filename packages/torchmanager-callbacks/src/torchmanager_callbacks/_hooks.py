"""Per-instance hook selection: how a callback whose hooks depend on its settings stays free per step.

Why: the loop calls a callback only for the hooks its *class* overrides
(`torchmanager_core.callbacks.overrides`). A `TensorBoard` writing once an epoch, or a
`LastCheckpoint` without step saving, must not be called after every batch, yet the same classes
act per batch with other settings. `select_hooks` gives such an instance a subclass of its class
(same name, cached) in which the hooks its settings leave unused are `Callback`'s no-ops again.
Only hooks whose implementation is the owner class's own dispatcher are dropped: a hook that a
user's subclass overrides stays.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from torchmanager_core.callbacks import HOOKS, Callback

__all__ = ["select_hooks"]


def select_hooks(callback: Callback, owner: type[Callback], unused: Iterable[str]) -> None:
    """Make the loop skip `callback`'s hooks in `unused` that resolve to `owner`'s own implementation.

    Args:
        callback: The instance whose hooks to select (its class is swapped for a cached variant).
        owner: The class defining the dispatching hooks (e.g. `FrequencyCallback`).
        unused: Hook names the instance's current settings never act in.
    """
    base: type[Callback] = type(callback).__dict__.get("_hooks_base", type(callback))
    dropped = frozenset(
        hook
        for hook in unused
        if hook in HOOKS and hook in owner.__dict__ and getattr(base, hook) is owner.__dict__[hook]
    )
    callback.__class__ = _variant(base, dropped) if dropped else base


@functools.cache
def _variant(base: type[Callback], dropped: frozenset[str]) -> type[Callback]:
    namespace: dict[str, Any] = {hook: getattr(Callback, hook) for hook in dropped}
    namespace.update(
        __module__=base.__module__,
        __qualname__=base.__qualname__,
        __doc__=base.__doc__,
        _hooks_base=base,
        _hooks_dropped=dropped,
        __reduce_ex__=_reduce_variant,
    )
    return type(base.__name__, (base,), namespace)


def _reduce_variant(self: Callback, protocol: Any) -> tuple[Any, ...]:
    # pickle finds classes by name, which would give the base class: rebuild the variant instead
    cls = type(self)
    return _rebuild, (cls.__dict__["_hooks_base"], cls.__dict__["_hooks_dropped"]), self.__dict__


def _rebuild(base: type[Callback], dropped: frozenset[str]) -> Callback:
    callback = base.__new__(base)
    callback.__class__ = _variant(base, dropped)
    return callback
