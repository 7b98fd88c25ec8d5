"""Where a callback's state goes in a checkpoint: a key from a stable identity, never a display name.

Who owns what: every callback of this package stores its state with `put_state` and reads it back
with `get_state`, under `checkpoint["callbacks"]`. The key is the callback's class and its rank
among the callbacks of that class in the list (`LrScheduler#0`, `LrScheduler#1`, ...), counted in
the order the loop calls them, which is the list's order (a group such as `Experiment` counts its
members where it stands). Names shown to the user (an lr tag, a monitor, a folder) are never part
of a key, so two callbacks of one kind (a per-update warmup and a per-epoch decay on one optimizer,
two best checkpoints of one monitor) each keep their own state. A callback whose `state_key`
attribute is set (a str) is stored under `<class>:<state_key>` instead, so that it finds its state
when the list's order changes between a run and its resume.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["get_state", "put_state"]


def _given(callback: object) -> str | None:
    key = getattr(callback, "state_key", None)
    if key is not None and not (isinstance(key, str) and key):
        raise TypeError(
            f"`state_key` of a callback must be a non-empty str (or None for its place in the list). "
            f"Received: state_key={key!r}"
        )
    return f"{type(callback).__name__}:{key}" if key is not None else None


def put_state(checkpoint: dict[str, Any], callback: object, state: Mapping[str, Any]) -> None:
    """Store `callback`'s `state` in the checkpoint being written (its key: see the module)."""
    states = checkpoint.setdefault("callbacks", {})
    key = _given(callback)
    if key is None:
        prefix = f"{type(callback).__name__}#"
        key = f"{prefix}{sum(1 for name in states if name.startswith(prefix))}"
    states[key] = dict(state)


def get_state(checkpoint: Mapping[str, Any], callback: object) -> Mapping[str, Any] | None:
    """`callback`'s state in a checkpoint being loaded, or None when it has none (e.g. another setup).

    The callbacks of one class take their states in the order they were stored: each state read is
    taken out of the loaded checkpoint's `callbacks`, so the next callback of that class gets the next.
    """
    states = checkpoint.get("callbacks")
    if not isinstance(states, Mapping):
        return None
    key = _given(callback)
    if key is None:
        prefix = f"{type(callback).__name__}#"
        key = next((name for name in states if isinstance(name, str) and name.startswith(prefix)), None)
        if key is None:
            return None
    state = states.pop(key, None) if isinstance(states, MutableMapping) else states.get(key)
    return state if isinstance(state, Mapping) else None
