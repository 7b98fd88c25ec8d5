"""The callback protocol of the training loop: `Callback` hooks and the `CallbackList` the loop calls.

Hook order in `fit` (each hook is called only on callbacks whose class overrides it; the list
gives each callback its `manager` with `set_manager` first, and checks every overridden hook's
signature when it is built, before any batch trains):

=====================================  ==================================================
hook                                   when
=====================================  ==================================================
``on_train_start(initial_epoch)``      once, after the model moved to its device
``on_epoch_start(epoch)``              each epoch, after the training values were reset
``on_batch_start(batch)``              each batch (index within the epoch), before the step
``on_batch_end(batch, summary=)``      after `train_step`; `summary` is the step's dict of
                                       batch values (device tensors: reading them syncs);
                                       `manager.global_step` counts optimizer updates
``on_validation_start(epoch)``         before validating an epoch (only with `val_dataset`)
``on_validation_end(epoch,             after validating, with the validation floats
val_summary)``
``on_epoch_end(epoch, summary=,        after validation and the epoch's summary line; the
val_summary=)``                        epoch's floats (`val_summary` None without one)
``on_train_end(model)``                once, always (also after `StopTraining`, Ctrl-C or an
                                       error), with the raw (unwrapped) model
``on_save_checkpoint(checkpoint)``     the manager is saving `checkpoint` (a dict): add this
                                       callback's state under its own key (plain values)
``on_load_checkpoint(checkpoint)``     a checkpoint was loaded to resume: read the state back
=====================================  ==================================================

`test(..., callbacks_list=...)` calls ``on_test_start()``, ``on_test_batch_start(batch)``,
``on_test_batch_end(batch, summary=)`` and ``on_test_end(summary)`` in the same way.

Every hook takes one route (the run's dispatch). A `manager.save_checkpoint(path)` inside any hook
is a request: the loop writes the file after every callback has had the hook (also when a later
callback raised), so it holds every callback's state of one moment. `StopTraining` raised from any
hook, or `manager.stop_training = True`, ends training cleanly on every process under torchrun:

- from `on_train_start`: before anything trains;
- from `on_epoch_start`: before the epoch's first batch (the epoch has not started: a later `fit`
  or a checkpoint starts it);
- from `on_batch_start` or `on_batch_end`: after that batch (the epoch is neither validated nor
  ended: a later `fit` or a checkpoint goes on from the next batch; after the epoch's last batch
  the epoch ends as usual); under torchrun after the next batch, on every process at the same one
  (the processes agree in the background: no step waits on a collective);
- from `on_validation_start`, `on_validation_end` or `on_epoch_end`: after the current epoch, which
  is validated and ended (history, `on_epoch_end`, its checkpoints) first.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from .errors import StopTraining

__all__ = ["HOOKS", "Callback", "CallbackList", "check_hooks", "overrides"]

HOOKS = (
    "on_train_start",
    "on_epoch_start",
    "on_batch_start",
    "on_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_epoch_end",
    "on_train_end",
    "on_test_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_test_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
)
"""The hook names: a training run's in order, then testing's, then checkpointing's."""


class Callback:
    """A training callback: override the hooks you need, the others cost nothing."""

    unused_hooks: frozenset[str] = frozenset()
    """Overridden hooks that this instance's settings never act in; the loop skips them too."""

    reads_batch_summary: bool = True
    """Whether its `on_batch_end` reads the batch's `summary`; a callback that never does says False,
    so that the default step need not make the batch values (it then gets `{}`)."""

    manager: Any = None
    """The manager running this callback: set by `fit` (and `test`) before the first hook, as Keras's `set_model`."""

    def set_manager(self, manager: Any) -> None:
        """Called by `fit` and `test` before the first hook with the manager that runs this callback."""
        self.manager = manager

    def resume_checkpoint(self) -> str | None:
        """A checkpoint this callback asks `fit` to resume from (`Experiment(resume=True)` does), else None."""
        return None

    def preemption_checkpoints(self) -> list[str]:
        """The files `fit` saves the run to when a signal preempts it (a `LastCheckpoint`'s path), else none."""
        return []

    def on_train_start(self, initial_epoch: int = 0) -> None:
        """Training starts at epoch index `initial_epoch`."""

    def on_epoch_start(self, epoch: int) -> None:
        """Epoch `epoch` (0-based) starts."""

    def on_batch_start(self, batch: int) -> None:
        """Batch `batch` (0-based, within the epoch) starts."""

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        """Batch `batch` ended with the step's `summary` of batch values."""

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        """Epoch `epoch` ended with its training `summary` and optional `val_summary`."""

    def on_validation_start(self, epoch: int) -> None:
        """Validation of epoch `epoch` starts."""

    def on_validation_end(self, epoch: int, val_summary: Mapping[str, float]) -> None:
        """Validation of epoch `epoch` ended with `val_summary`."""

    def on_train_end(self, model: torch.nn.Module) -> None:
        """Training ended (normally or not); `model` is the raw trained model."""

    def on_test_start(self) -> None:
        """`test` starts."""

    def on_test_batch_start(self, batch: int) -> None:
        """Test batch `batch` starts."""

    def on_test_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        """Test batch `batch` ended with the step's `summary` of batch values."""

    def on_test_end(self, summary: Mapping[str, float]) -> None:
        """`test` ended with its `summary` of floats."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The manager is saving `checkpoint`: store this callback's state in it (plain values, tensors)."""

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """The manager resumes from `checkpoint`: restore this callback's state from it."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether the loop must call `callback` at `hook`: its class overrides it and it is not in `unused_hooks`."""
    return getattr(type(callback), hook) is not getattr(Callback, hook) and hook not in callback.unused_hooks


_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "on_train_start": ((0,), {}),
    "on_epoch_start": ((0,), {}),
    "on_batch_start": ((0,), {}),
    "on_batch_end": ((0,), {"summary": {}}),
    "on_validation_start": ((0,), {}),
    "on_validation_end": ((0, {}), {}),
    "on_epoch_end": ((0,), {"summary": {}, "val_summary": None}),
    "on_train_end": ((None,), {}),
    "on_test_start": ((), {}),
    "on_test_batch_start": ((0,), {}),
    "on_test_batch_end": ((0,), {"summary": {}}),
    "on_test_end": (({},), {}),
    "on_save_checkpoint": (({},), {}),
    "on_load_checkpoint": (({},), {}),
}
"""How the loop calls each hook: its positional and keyword arguments (upstream's calling convention)."""


def check_hooks(callback: Callback, where: str) -> None:
    """Raise `TypeError` if a hook `callback` overrides cannot take the arguments the loop gives it.

    Checked when a callback list is built, so a wrong signature fails before any batch trains.
    """
    for hook, (args, kwargs) in _CALLS.items():
        if not overrides(callback, hook):
            continue
        method = getattr(callback, hook)
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):
            continue  # a builtin or C-implemented callable: nothing to check
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            expected = getattr(Callback, hook)
            wanted = str(inspect.signature(expected)).replace("self, ", "").replace("(self)", "()")
            raise TypeError(
                f"The callback {where} of type {type(callback).__name__} defines `{hook}{_shown(signature)}`, which cannot "
                f"take the arguments the loop passes ({error}); define it as `def {hook}{_with_self(wanted)}`. "
                f"Received: {type(callback).__name__}.{hook}{_shown(signature)}"
            ) from None


def _shown(signature: inspect.Signature) -> str:
    return str(signature.replace(return_annotation=inspect.Signature.empty))


def _with_self(parameters: str) -> str:
    inner = parameters.split(" -> ")[0]
    return "(self" + (", " + inner[1:] if inner != "()" else ")")


class CallbackList(Callback):
    """Several callbacks called as one, each only for the hooks its class overrides.

    Hooks are called as upstream called them: `on_batch_end(batch, summary=...)`,
    `on_epoch_end(epoch, summary=..., val_summary=...)`, the others positionally.

    Args:
        callbacks: The callbacks, in calling order.
    Raises:
        TypeError: An item is not a `Callback`, or a hook it overrides cannot take the loop's arguments.
        ValueError: Two callbacks ask to resume from different checkpoints.
    """

    def __init__(self, callbacks: Iterable[Callback] | None = None) -> None:
        if callbacks is not None and (
            isinstance(callbacks, (str, bytes, Mapping)) or not isinstance(callbacks, Iterable)
        ):
            raise TypeError(
                f"`callbacks_list` must be a list of Callback objects. Received: callbacks_list={callbacks!r}"
            )
        self._callbacks = list(callbacks or [])
        for i, callback in enumerate(self._callbacks):
            if isinstance(callback, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
                # not wrapped for the user: whether it steps per epoch or per optimizer update is theirs to say
                raise TypeError(
                    "A learning-rate scheduler is not a callback: wrap it in `torchmanager.callbacks.LrScheduler("
                    "scheduler)` to step it after each epoch, or `LrScheduler(scheduler, Frequency.BATCH)` after each "
                    f"optimizer update (OneCycleLR, warmups). Received: callbacks_list[{i}]={type(callback).__name__}"
                )
            if not isinstance(callback, Callback):
                raise TypeError(
                    "Every callback must be an instance of torchmanager_core.callbacks.Callback (subclass it). "
                    f"Received: callbacks_list[{i}]={callback!r} of type {type(callback).__name__}"
                )
            check_hooks(callback, f"callbacks_list[{i}]")
        self._by_hook = {hook: [c for c in self._callbacks if overrides(c, hook)] for hook in HOOKS}
        self.reads_batch_summary = any(c.reads_batch_summary for c in self._by_hook["on_batch_end"])

    def __iter__(self) -> Iterator[Callback]:
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    def set_manager(self, manager: Any) -> None:
        self.manager = manager
        for callback in self._callbacks:
            callback.set_manager(manager)

    def resume_checkpoint(self) -> str | None:
        """The checkpoint a callback asks `fit` to resume from (`Experiment(resume=True)`), or None.

        Raises:
            ValueError: Callbacks ask for different checkpoints.
        """
        paths = {path for callback in self._callbacks if (path := callback.resume_checkpoint()) is not None}
        if len(paths) > 1:
            raise ValueError(
                f"Callbacks ask to resume from different checkpoints; keep one of them. Received: {sorted(paths)}"
            )
        return paths.pop() if paths else None

    def preemption_checkpoints(self) -> list[str]:
        """Every callback's preemption checkpoints, each path once, in list order."""
        return list(dict.fromkeys(path for callback in self._callbacks for path in callback.preemption_checkpoints()))

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._call("on_train_start", initial_epoch)

    def on_epoch_start(self, epoch: int) -> None:
        self._call("on_epoch_start", epoch)

    def on_batch_start(self, batch: int) -> None:
        self._call("on_batch_start", batch)

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self._call("on_batch_end", batch, summary=summary)

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        self._call("on_epoch_end", epoch, summary=summary, val_summary=val_summary)

    def on_validation_start(self, epoch: int) -> None:
        self._call("on_validation_start", epoch)

    def on_validation_end(self, epoch: int, val_summary: Mapping[str, float]) -> None:
        self._call("on_validation_end", epoch, val_summary)

    def on_train_end(self, model: torch.nn.Module) -> None:
        self._call("on_train_end", model)

    def on_test_start(self) -> None:
        self._call("on_test_start")

    def on_test_batch_start(self, batch: int) -> None:
        self._call("on_test_batch_start", batch)

    def on_test_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        self._call("on_test_batch_end", batch, summary=summary)

    def on_test_end(self, summary: Mapping[str, float]) -> None:
        self._call("on_test_end", summary)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._call("on_save_checkpoint", checkpoint)

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        self._call("on_load_checkpoint", checkpoint)

    def _call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call `hook` on each callback overriding it; a `StopTraining` is raised after all were called."""
        stop: StopTraining | None = None
        for callback in self._by_hook[hook]:
            try:
                getattr(callback, hook)(*args, **kwargs)
            except StopTraining as error:
                stop = error
        if stop is not None:
            raise stop

    def uses(self, hook: str) -> bool:
        """Whether any callback overrides `hook` (the loop skips hooks nobody uses)."""
        return bool(self._by_hook[hook])
