"""Per-instance hook selection: how a callback whose hooks depend on its settings stays free per step.

Why: the loop calls a callback only for the hooks its class overrides and its `unused_hooks` does
not name (`torchmanager_core.callbacks.overrides`). A `TensorBoard` writing once an epoch, or a
`LastCheckpoint` without step saving, must not be called after every batch, yet the same classes
act per batch with other settings. Only hooks whose implementation is the owner class's own
dispatcher are marked unused: a hook that a user's subclass overrides stays.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from torchmanager_core.callbacks import HOOKS, Callback

__all__ = ["error_leaving_fit", "handled_error", "select_hooks"]


def handled_error() -> BaseException | None:
    """The exception being handled where this is called (call it in `on_train_start`, for `error_leaving_fit`)."""
    return sys.exc_info()[1]


def error_leaving_fit(before: BaseException | None) -> BaseException | None:
    """In `on_train_end` (called from `fit`'s `finally`): the exception ending `fit` (a preemption's `Preempted`,
    an error, Ctrl-C), or None when training ended normally; `before` is `handled_error()` from `on_train_start`,
    an exception the caller was handling already, which is not the run's."""
    error = sys.exc_info()[1]
    return None if error is before else error


def select_hooks(
    callback: Callback, owner: type[Callback], unused: Iterable[str], keep: Iterable[str] = frozenset()
) -> None:
    """Mark `callback`'s hooks in `unused` that resolve to `owner`'s own implementation as unused.

    Args:
        callback: The instance whose hooks to select.
        owner: The class defining the dispatching hooks (e.g. `FrequencyCallback`).
        unused: Hook names the instance's current settings never act in.
        keep: Hooks already marked unused (by a base class's selection) that stay so.
    """
    callback.unused_hooks = frozenset(keep) | frozenset(
        hook
        for hook in unused
        if hook in HOOKS and hook in owner.__dict__ and getattr(type(callback), hook) is owner.__dict__[hook]
    )
