"""`EarlyStop`: end training when a monitored value stops improving."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from torchmanager_core.callbacks import Callback
from torchmanager_core.errors import StopTraining

from ._state import get_state, put_state
from .monitor import Monitor, Monitored, MonitorType

__all__ = ["EarlyStop"]

_logger = logging.getLogger("torchmanager")


class EarlyStop(Monitored, Callback):
    """Stops training after `steps` epochs in a row without improvement of `monitor`.

    It sets the manager's `stop_training` flag (the manager whose `fit` runs it, or `manager=`),
    so every callback still finishes the epoch (a `LastCheckpoint` saves it) and, under torchrun,
    every process stops at the same epoch. Its message follows the epoch's summary line.

    An epoch improves when its value (validation's if the epoch was validated) beats the best by
    more than `min_delta`. With `steps=3`, training stops at the end of the third epoch in a row
    without improvement (upstream stopped one epoch later, and started a MAX monitor at the
    smallest positive float, so negative values never counted as improvements).
    With `restore_best_weights`, the weights of the best epoch are put back when training ends
    (logged, naming the epoch): the last epoch's summary then describes other weights.
    The best value, the count and the best weights survive a resume through the checkpoint.

    Args:
        monitor: The summary name to watch.
        monitor_type: Whether larger (MAX) or smaller (MIN) is better; None infers it from the name
            (MIN for losses and errors, MAX for the rest, as `BestCheckpoint`).
        steps: How many epochs without improvement to allow (>= 1).
        min_delta: The margin an improvement must beat the best by (>= 0).
        restore_best_weights: At the end of training, put the weights of the best epoch back into the model.
        manager: The manager to stop and copy the best weights from (default: the one whose `fit` runs
            this callback; the model itself also works for the weights).
    Raises:
        TypeError: `monitor_type` is not a `MonitorType`; (at the first improvement) `restore_best_weights`
            without a manager or model.
        ValueError: `steps` is not an int >= 1, or `min_delta` is negative.
    """

    def __init__(
        self,
        monitor: str,
        monitor_type: MonitorType | None = None,
        steps: int = 10,
        *,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        manager: Any = None,
    ) -> None:
        super().__init__()
        self._monitor = Monitor(monitor, monitor_type, min_delta)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an int >= 1 (epochs without improvement). Received: steps={steps!r}")
        self.steps = steps
        self.restore_best_weights = restore_best_weights
        self.manager = manager
        self.wait = 0
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        value = self._monitor.read(summary, val_summary)
        if self._monitor.improved(value):
            self._monitor.best, self.wait, self.best_epoch = value, 0, epoch
            if self.restore_best_weights:
                model = self._model()
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return
        self.wait += 1
        if self.wait < self.steps:
            return
        message = f"Early stop at epoch {epoch + 1}: `{self.monitor}` did not improve for {self.wait} epochs"
        if hasattr(self.manager, "stop_training"):
            _logger.info(message)
            self.manager.stop_training = True
        else:
            raise StopTraining(epoch, message)

    def _model(self) -> torch.nn.Module:
        model = getattr(self.manager, "raw_model", self.manager)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "`restore_best_weights=True` needs the manager to copy the best weights from: list the callback in "
                f"`manager.fit(..., callbacks_list=[...])`, or pass `manager=`. Received: manager={self.manager!r}"
            )
        return model

    def on_train_end(self, model: torch.nn.Module) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            model.load_state_dict(self.best_weights)
            where = f"epoch {self.best_epoch + 1}" if self.best_epoch is not None else "the best epoch"
            _logger.info(
                f"EarlyStop: restored the weights of {where} (`{self.monitor}`={self.best_score:.4f}); the last "
                "epoch's summary describes the weights before this restore."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {**self._monitor.state_dict(), "wait": self.wait, "best_epoch": self.best_epoch}
        if self.best_weights is not None:
            state["best_weights"] = self.best_weights
        put_state(checkpoint, self, state)

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None:
            self._monitor.load_state_dict(state)
            self.wait = int(state["wait"])
            self.best_epoch = state.get("best_epoch")
            self.best_weights = dict(state["best_weights"]) if "best_weights" in state else None
