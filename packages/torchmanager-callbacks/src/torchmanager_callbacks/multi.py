"""`MultiCallbacks`: several callbacks used as one (upstream's class, on top of core's `CallbackList`).

The group is seen by the loop only for the hooks some member overrides, so a group of per-epoch
callbacks costs nothing per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from torchmanager_core.callbacks import HOOKS, Callback, CallbackList, overrides

from ._hooks import select_hooks

__all__ = ["MultiCallbacks"]


class MultiCallbacks(Callback):
    """Callbacks called in order as one callback.

    Change the members with `append` and `pop` (`callbacks_list` is a read-only tuple), so that the
    hooks the loop calls follow the members.

    Args:
        *callbacks: The members, in calling order.
    Raises:
        TypeError: A member is not a `Callback`.
    """

    def __init__(self, *callbacks: Callback) -> None:
        super().__init__()
        self._set(list(callbacks))

    def _set(self, callbacks: list[Callback]) -> None:
        self._list = CallbackList(callbacks)
        self._members = callbacks
        self.reads_batch_summary = self._list.reads_batch_summary
        used = {hook for hook in HOOKS if any(overrides(c, hook) for c in callbacks)}
        select_hooks(self, MultiCallbacks, set(HOOKS) - used)

    @property
    def callbacks_list(self) -> tuple[Callback, ...]:
        """The members, in calling order."""
        return tuple(self._members)

    def __getitem__(self, index: int) -> Callback:
        return self._members[index]

    def __iter__(self) -> Iterator[Callback]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def append(self, callback: Callback) -> None:
        """Add `callback` at the end."""
        self._set([*self._members, callback])

    def pop(self, index: int = -1) -> Callback:
        """Remove the member at `index` and return it."""
        members = list(self._members)
        callback = members.pop(index)
        self._set(members)
        return callback

    def resume_checkpoint(self) -> str | None:
        return self._list.resume_checkpoint()

    def preemption_checkpoints(self) -> list[str]:
        return self._list.preemption_checkpoints()

    def set_manager(self, manager: Any) -> None:
        super().set_manager(manager)
        self._list.set_manager(manager)

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._list.on_train_start(initial_epoch)

    def on_epoch_start(self, epoch: int) -> None:
        self._list.on_epoch_start(epoch)

    def on_batch_start(self, batch: int) -> None:
        self._list.on_batch_start(batch)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self._list.on_batch_end(batch, summary)

    def on_validation_start(self, epoch: int) -> None:
        self._list.on_validation_start(epoch)

    def on_validation_end(self, epoch: int, val_summary: Mapping[str, float]) -> None:
        self._list.on_validation_end(epoch, val_summary)

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        self._list.on_epoch_end(epoch, summary, val_summary)

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._list.on_train_end(model)

    def on_test_start(self) -> None:
        self._list.on_test_start()

    def on_test_batch_start(self, batch: int) -> None:
        self._list.on_test_batch_start(batch)

    def on_test_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self._list.on_test_batch_end(batch, summary)

    def on_test_end(self, summary: Mapping[str, float]) -> None:
        self._list.on_test_end(summary)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._list.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        self._list.on_load_checkpoint(checkpoint)
