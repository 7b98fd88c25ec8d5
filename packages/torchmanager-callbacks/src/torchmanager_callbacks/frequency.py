"""`Frequency` and `FrequencyCallback`: a callback that steps at the start or end of every batch or epoch.

Only the hooks of the chosen frequency are seen by the loop (see `_hooks`), so an epoch-frequency
callback costs nothing per batch.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from torchmanager_core.callbacks import Callback
from torchmanager_core.protocols import Frequency

from ._hooks import select_hooks
from ._state import get_state, put_state

__all__ = ["Frequency", "FrequencyCallback", "check_frequency"]


_HOOK_OF = {
    Frequency.EPOCH: "on_epoch_end",
    Frequency.EPOCH_START: "on_epoch_start",
    Frequency.BATCH: "on_batch_end",
    Frequency.BATCH_START: "on_batch_start",
}


def check_frequency(freq: object, allowed: tuple[Frequency, ...] = tuple(Frequency)) -> Frequency:
    """Return `freq` if it is one of `allowed`, else raise.

    Raises:
        TypeError: `freq` is not a `Frequency`.
        ValueError: `freq` is a `Frequency` that is not allowed here.
    """
    names = " or ".join(f"`Frequency.{f.name}`" for f in allowed)
    if not isinstance(freq, Frequency):
        raise TypeError(f"`freq` must be {names}. Received: freq={freq!r}")
    if freq not in allowed:
        raise ValueError(f"`freq` must be {names} for this callback. Received: freq=Frequency.{freq.name}")
    return freq


def check_non_negative_int(value: object, name: str) -> int:
    """Return `value` if it is an int >= 0, else raise `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0. Received: {name}={value!r}")
    return value


class FrequencyCallback(Callback, abc.ABC):
    """A callback that calls `step` once per epoch or per optimizer update and passes its result to `_update`.

    With `Frequency.EPOCH` and `EPOCH_START` the step counter follows the epoch index (it is set to
    the initial epoch when training starts). The batch frequencies count optimizer updates (with
    gradient accumulation one per window): `BATCH` steps after the batch that updated the
    parameters, `BATCH_START` before the first batch of each window; without a manager that counts
    updates, every batch. Their counter starts at `initial_step` and is stored in checkpoints so
    that a resumed run goes on counting.

    Args:
        freq: When to step.
        initial_step: The first value of `current_step`.
    Raises:
        TypeError: `freq` is not a `Frequency`.
        ValueError: `initial_step` is not an int >= 0.
    """

    def __init__(self, freq: Frequency = Frequency.EPOCH, initial_step: int = 0) -> None:
        super().__init__()
        self._freq = check_frequency(freq)
        self._step = check_non_negative_int(initial_step, "initial_step")
        self._update_seen: int | None = None  # the manager's update count when this callback last stepped
        self._select_frequency_hooks()

    def _select_frequency_hooks(self) -> None:
        unused = {hook for f, hook in _HOOK_OF.items() if f != self._freq}
        if self._freq in (Frequency.EPOCH, Frequency.EPOCH_START):
            unused |= {"on_save_checkpoint", "on_load_checkpoint"}
        select_hooks(self, FrequencyCallback, unused)

    @property
    def freq(self) -> Frequency:
        """When this callback steps."""
        return self._freq

    @property
    def current_step(self) -> int:
        """The index of the next step."""
        return self._step

    @current_step.setter
    def current_step(self, step: int) -> None:
        self._step = check_non_negative_int(step, "current_step")

    @abc.abstractmethod
    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Do this callback's work; called with the summaries at `*_END` frequencies, without at `*_START`.

        Returns:
            A result passed to `_update`.
        """

    def _update(self, result: Any) -> None:
        """Use the result of `step` (no-op by default)."""

    def _advance(self, *args: Any) -> None:
        self._update(self.step(*args))
        self._step += 1

    def _new_update(self) -> bool:
        """Whether the manager made an optimizer update since this callback last stepped (every batch without one)."""
        updates = getattr(self.manager, "global_step", None)
        if not isinstance(updates, int):
            return True
        if updates == self._update_seen:
            return False
        self._update_seen = updates
        return True

    # Each hook checks the frequency too: a subclass overriding a hook may call it for any frequency.
    def on_train_start(self, initial_epoch: int = 0) -> None:
        if self._freq in (Frequency.EPOCH, Frequency.EPOCH_START):
            self._step = initial_epoch
        else:  # a window starts with the first batch; BATCH steps only after an update
            updates = getattr(self.manager, "global_step", None)
            self._update_seen = None if self._freq is Frequency.BATCH_START else updates

    def on_epoch_start(self, epoch: int) -> None:
        if self._freq is Frequency.EPOCH_START:
            self._advance()

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if self._freq is Frequency.EPOCH:
            self._advance(summary, val_summary)

    def on_batch_start(self, batch: int) -> None:
        if self._freq is Frequency.BATCH_START and self._new_update():
            self._advance()

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self._freq is Frequency.BATCH and self._new_update():
            self._advance(summary)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        put_state(checkpoint, self, {"current_step": self._step})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None and "current_step" in state:
            self._step = int(state["current_step"])
