"""`LastCheckpoint` and `BestCheckpoint`: save the manager's checkpoint during training.

Who owns what: the file format and its atomic write belong to `torchmanager_core.checkpoint`;
these callbacks decide when to save and where, and ask the manager (`manager.save_checkpoint`).
During `fit` the loop writes the file once every callback has had the hook that asked, so the
checkpoint holds every callback's state of the same moment, whatever the order of the list. A
failed write leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from torchmanager_core import checkpoint as core_checkpoint
from torchmanager_core.callbacks import Callback
from torchmanager_core.distributed import barrier
from torchmanager_core.tracking import merge_summaries

from ._hooks import select_hooks
from ._io import check_output_path, is_writer
from ._state import get_state, put_state
from .monitor import Monitor, Monitored, MonitorType

__all__ = ["BestCheckpoint", "Checkpoint", "CheckpointManager", "LastCheckpoint"]

_logger = logging.getLogger("torchmanager")


@runtime_checkable
class CheckpointManager(Protocol):
    """What the checkpoint callbacks need of a manager."""

    def save_checkpoint(self, path: str) -> None: ...


def _check_manager(manager: object) -> CheckpointManager | None:
    if manager is not None and not callable(getattr(manager, "save_checkpoint", None)):
        raise TypeError(
            "`manager` must be a torchmanager Manager (an object with `save_checkpoint(path)`), or None for the "
            "manager whose `fit` runs the callback. "
            f"Received: manager={type(manager).__name__}"
        )
    return manager  # type: ignore[return-value]


_UPSTREAM_OPTIONS = ("last_epoch", "optimizer", "loss_fn", "metrics", "save_weights_only")
"""Keywords upstream 1.5's checkpoint callbacks took to save a bare model with its optimizer and losses."""


def _refuse_upstream_options(callback: str, options: Mapping[str, Any]) -> None:
    """Raise `TypeError` for keywords the callback does not take, with the way forward for upstream's."""
    unknown = sorted(set(options) - set(_UPSTREAM_OPTIONS))
    if unknown:
        raise TypeError(f"{callback}() got an unexpected keyword argument {unknown[0]!r}")
    if options:
        raise TypeError(
            f"{callback} saves the manager's checkpoint, which holds the model, the optimizer, the losses and the "
            f"metrics together: pass the manager, {callback}(manager, ckpt_path, ...), without upstream 1.5's "
            f"{', '.join(f'`{name}=`' for name in options)}. "
            f"Received: {', '.join(f'{name}={type(value).__name__}' for name, value in options.items())}"
        )


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    return value


def model_state(checkpoint: Mapping[str, Any], path: str) -> Mapping[str, torch.Tensor]:
    """The model's state dict in a checkpoint written by `manager.save_checkpoint`."""
    state = checkpoint.get("model")
    if not isinstance(state, Mapping):
        raise core_checkpoint.CheckpointError(
            f"Checkpoint `{path}` holds no model state dict under `model`; was it written by `manager.save_checkpoint`? "
            f"Received: keys={sorted(checkpoint)}"
        )
    return state


class _Saving(Callback):
    """Saves the manager's checkpoint to `ckpt_path` (the manager writes on the main process only)."""

    def __init__(
        self,
        manager: CheckpointManager | None,
        ckpt_path: str,
        show_verbose: bool,
        upstream_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _refuse_upstream_options(type(self).__name__, upstream_options or {})
        self.manager = _check_manager(manager)
        self._ckpt_path = check_output_path(ckpt_path, "ckpt_path", core_checkpoint.CheckpointError, checkpoint=True)
        self.show_verbose = show_verbose

    @property
    def ckpt_path(self) -> str:
        """Where the checkpoint is written (its folder is created when set)."""
        return self._ckpt_path

    @ckpt_path.setter
    def ckpt_path(self, path: str) -> None:
        self._ckpt_path = check_output_path(path, "ckpt_path", core_checkpoint.CheckpointError, checkpoint=True)

    background: bool = False
    """Whether saves are written in the background (`LastCheckpoint(background=True)`)."""

    def _save(self, path: str | None = None) -> None:
        # every process asks: the manager writes on the main process and synchronises the others
        if self.manager is None:
            raise TypeError(
                f"{type(self).__name__} has no manager to save: pass `manager=` or use it in `manager.fit(..., "
                f"callbacks_list=[...])`. Received: manager=None"
            )
        path = self._ckpt_path if path is None else path
        if self.background:
            self.manager.save_checkpoint(path, background=True)  # a Manager takes it
        else:
            self.manager.save_checkpoint(path)
        if self.show_verbose and is_writer():
            _logger.info(f"Checkpoint to {path}")


class LastCheckpoint(_Saving):
    """Saves the manager's checkpoint every `freq` epochs, and every `save_every_n_steps` optimizer steps if given.

    Epoch `e` (0-based) is saved when `(e + 1) % freq == 0`, so the last of `freq * k` epochs is
    always saved (upstream saved when `e % freq == 0`: the first epoch, never the last). Steps are
    optimizer updates (`manager.global_step`: with gradient accumulation one per window), so a
    step checkpoint never splits an accumulation window and resumes exactly. Without
    `save_every_n_steps` it is not called per batch, and it never reads the batch values.
    When the run is preempted (SIGTERM, SIGUSR1 during `fit`), `fit` saves it to `ckpt_path` too
    (`preemption_checkpoints`), after the optimizer update in progress, and waits for the write.
    A model sharded with FSDP2 is saved as a folder at `ckpt_path`, each process its shards.

    With `background=True` a save takes its snapshot at the step (the state copied to host memory)
    and a thread writes it while training goes on; the next save, a preemption and the end of `fit`
    wait for it, and a failed write is reported there under `fit`'s `on_checkpoint_error`. The file
    is as atomic as a synchronous one: a kill during the write leaves the previous checkpoint.

    Args:
        manager: The manager whose `save_checkpoint` writes the file (None: the one whose `fit` runs it).
        ckpt_path: The checkpoint file; its folder is created if needed.
        freq: Save every `freq` epochs.
        save_every_n_steps: Also save after every this many optimizer steps (counted over the whole run).
        background: Write each save in the background (see above); a sharded model's with DCP's asynchronous save.
        show_verbose: Log each save at INFO.
        **upstream_options: Refused with the way forward: upstream 1.5's `optimizer`, `loss_fn`,
            `metrics`, `last_epoch` and `save_weights_only` (the manager holds all of it).
    Raises:
        TypeError: `manager` has no `save_checkpoint`, or an upstream option was given.
        ValueError: `freq` or `save_every_n_steps` is not an int >= 1.
        CheckpointError: The folder of `ckpt_path` cannot be created or written.
    """

    reads_batch_summary = False  # step checkpoints count optimizer updates, never the batch values

    def __init__(
        self,
        manager: CheckpointManager | None,
        ckpt_path: str,
        freq: int = 1,
        *,
        save_every_n_steps: int | None = None,
        background: bool = False,
        show_verbose: bool = False,
        **upstream_options: Any,
    ) -> None:
        super().__init__(manager, ckpt_path, show_verbose, upstream_options)
        if not isinstance(background, bool):
            raise TypeError(f"`background` must be True or False. Received: background={background!r}")
        self.background = background
        self.freq = _check_positive(freq, "freq")
        self.save_every_n_steps = (
            None if save_every_n_steps is None else _check_positive(save_every_n_steps, "save_every_n_steps")
        )
        self._saved_step: int | None = None
        if self.save_every_n_steps is None:
            select_hooks(self, LastCheckpoint, {"on_train_start", "on_batch_end"})

    def preemption_checkpoints(self) -> list[str]:
        """Where `fit` saves the run when a signal preempts it: this checkpoint's path, the one a resume reads."""
        return [self.ckpt_path]

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self._saved_step = getattr(self.manager, "global_step", None)  # a resumed run saved its step already

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        step = getattr(self.manager, "global_step", None)
        if self.save_every_n_steps is None or not isinstance(step, int):
            return
        if step % self.save_every_n_steps == 0 and step != self._saved_step and step > 0:
            self._saved_step = step
            self._save()

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if (epoch + 1) % self.freq == 0:
            self._save()


Checkpoint = LastCheckpoint
"""Upstream's alias of `LastCheckpoint`."""


class BestCheckpoint(Monitored, _Saving):
    """Saves the manager's checkpoint whenever the monitored value improves on its best.

    The value is the validation one when the epoch was validated, else the training one; the best
    starts at -inf for MAX and +inf for MIN (upstream started MAX at -1, so a metric that stays
    below -1 was never saved). Ties do not count as improvements: the first best epoch is kept.
    The best value survives a resume through the checkpoint.

    With `save_top_k=k` it keeps the `k` best epochs instead, each in `<stem>-epoch<N><ext>` beside
    `ckpt_path` (N counts epochs done, e.g. `best-epoch7.model`): an epoch better than the worst kept
    is saved and the worst file deleted. The kept set is in every checkpoint, so a resumed run keeps
    the same files; `best_ckpt_path` is the best of them, and `top_k` lists them best first.

    Args:
        monitor: The summary name to watch, e.g. "accuracy".
        manager: The manager whose `save_checkpoint` writes the file (None: the one whose `fit` runs it).
        ckpt_path: The checkpoint file; its folder is created if needed.
        load_best: At the end of training, load the best checkpoint's weights into the model.
        save_top_k: How many of the best epochs to keep as files (1: `ckpt_path` only).
        monitor_type: Whether larger (MAX) or smaller (MIN) is better; None (the default) infers it from
            the name: MIN for `loss`, `val_loss`, `*_loss` and error-like names (`mse`, `mae`, ...), MAX
            for the rest (upstream's default was MAX whatever the name, which kept a loss's worst epoch).
        show_verbose: Log each new best at INFO.
        **upstream_options: Refused with the way forward, as `LastCheckpoint` does.
    Raises:
        TypeError: `monitor_type` is not a `MonitorType`, `monitor` is not a str, `manager` has no
            `save_checkpoint`, or an upstream option was given.
        CheckpointError: The folder of `ckpt_path` cannot be created or written.
        MonitorError: (at the end of an epoch) `monitor` is not in the summary.
        ValueError: `save_top_k` is not an int >= 1.
    """

    def __init__(
        self,
        monitor: str,
        manager: CheckpointManager | None,
        ckpt_path: str,
        load_best: bool = False,
        monitor_type: MonitorType | None = None,
        *,
        save_top_k: int = 1,
        show_verbose: bool = False,
        **upstream_options: Any,
    ) -> None:
        self._monitor = Monitor(monitor, monitor_type)
        super().__init__(manager, ckpt_path, show_verbose, upstream_options)
        self.load_best = load_best
        self.save_top_k = _check_positive(save_top_k, "save_top_k")
        self.best_summary: dict[str, float] = {}
        self._kept: list[tuple[float, int]] = []  # (value, epochs done) of the files kept, with save_top_k > 1

    @property
    def top_k(self) -> list[str]:
        """The files kept, best first (`[ckpt_path]` once a best was saved, with `save_top_k=1`)."""
        if self.save_top_k == 1:
            return [self.ckpt_path] if self._monitor.best != self.monitor_type.init_score else []
        return [self._epoch_path(epochs) for _, epochs in self._kept]

    @property
    def best_ckpt_path(self) -> str:
        """The file of the best epoch: `ckpt_path`, or the first of `top_k`."""
        return self.ckpt_path if self.save_top_k == 1 or not self._kept else self._epoch_path(self._kept[0][1])

    def _epoch_path(self, epochs: int) -> str:
        stem, extension = os.path.splitext(self.ckpt_path)
        return f"{stem}-epoch{epochs}{extension}"

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        value = self._monitor.read(summary, val_summary)
        if self.save_top_k > 1:
            self._keep(value, epoch + 1, summary, val_summary)
            return
        if not self._monitor.improved(value):
            return
        self._monitor.best = value
        self.best_summary = merge_summaries(summary, val_summary)
        if self.show_verbose:
            _logger.info(f"Best checkpoint for {self.monitor} recorded: {value}")
        self._save()

    def _keep(
        self, value: float, epochs: int, summary: Mapping[str, float], val_summary: Mapping[str, float] | None
    ) -> None:
        """Save this epoch if it is among the `save_top_k` best so far, and delete the file that left them."""
        if value != value:  # NaN is never among the best
            return
        worst = self._kept[-1][0] if len(self._kept) == self.save_top_k else self.monitor_type.init_score
        if not Monitor.beats(self.monitor_type, value, worst):
            return
        kept = [entry for entry in self._kept if entry[1] != epochs]  # a resumed epoch replaces its own file
        kept.append((value, epochs))
        kept.sort(
            key=lambda entry: -entry[0] if self.monitor_type is MonitorType.MAX else entry[0]
        )  # stable: ties keep the earlier
        dropped, self._kept = kept[self.save_top_k :], kept[: self.save_top_k]
        if self._kept[0] == (value, epochs):
            self._monitor.best, self.best_summary = value, merge_summaries(summary, val_summary)
        self._save(self._epoch_path(epochs))
        if is_writer():
            for _, old in dropped:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._epoch_path(old))

    def on_train_end(self, model: torch.nn.Module) -> None:
        if not self.load_best or self._monitor.best == self.monitor_type.init_score:
            return
        barrier()  # the main process may still be writing the last best checkpoint
        path = self.best_ckpt_path
        checkpoint = core_checkpoint.load(path, map_location="cpu")
        model.load_state_dict(model_state(checkpoint, path))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {**self._monitor.state_dict(), "best_summary": dict(self.best_summary)}
        put_state(checkpoint, self, {**state, "kept": [[value, epochs] for value, epochs in self._kept]})

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None:
            self._monitor.load_state_dict(state)
            self.best_summary = {str(k): float(v) for k, v in state.get("best_summary", {}).items()}
            self._kept = [(float(value), int(epochs)) for value, epochs in state.get("kept", [])]
