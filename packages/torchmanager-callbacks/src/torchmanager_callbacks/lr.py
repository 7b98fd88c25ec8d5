"""`LrScheduler`: step a learning-rate scheduler per epoch or batch, and report the learning rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ._state import get_state, put_state
from .dynamic import SummaryWritable
from .frequency import Frequency, FrequencyCallback, check_frequency
from .monitor import Monitor, MonitorType

__all__ = ["LrScheduler"]


class LrScheduler(FrequencyCallback):
    """Steps `scheduler` at the chosen frequency.

    At `Frequency.BATCH` it steps after each optimizer update (once per accumulation window, as
    torch expects `scheduler.step()` after `optimizer.step()`), not after each batch. The learning
    rate each epoch ended with is in every epoch summary anyway (`lr`, or `lr_0`, `lr_1`, ... for
    several parameter groups: the loop reports it, with or without this callback).
    `ReduceLROnPlateau` is stepped with the monitored value of the epoch (validation's when there
    is one), which upstream could not do.

    Args:
        scheduler: A torch scheduler, `ReduceLROnPlateau` included, or an object with `step()` and
            `get_last_lr()` (upstream 1.5's schedules).
        freq: `Frequency.EPOCH` (after each epoch) or `Frequency.BATCH` (after each optimizer update);
            `ReduceLROnPlateau` needs `Frequency.EPOCH`.
        name: The tag of the learning rate for `tf_board_writer`.
        tf_board_writer: Optional writer receiving the learning rate after each epoch.
        monitor: The summary name `ReduceLROnPlateau` watches (default "loss"); only for it.
    Raises:
        TypeError: `scheduler` is not a torch scheduler, or `freq` is not a `Frequency`.
        ValueError: A start frequency; `ReduceLROnPlateau` at batch frequency; `monitor` for another scheduler.
    """

    reads_batch_summary = False  # per-update schedules step without the batch values

    def __init__(
        self,
        scheduler: LRScheduler | ReduceLROnPlateau | Any,
        freq: Frequency = Frequency.EPOCH,
        name: str = "lr",
        tf_board_writer: SummaryWritable | None = None,
        *,
        monitor: str | None = None,
    ) -> None:
        schedule_like = callable(getattr(scheduler, "step", None)) and callable(getattr(scheduler, "get_last_lr", None))
        if not isinstance(scheduler, (LRScheduler, ReduceLROnPlateau)) and not schedule_like:
            raise TypeError(
                "`scheduler` must be a torch.optim.lr_scheduler scheduler (LRScheduler or ReduceLROnPlateau), or an "
                "object with `step()` and `get_last_lr()` as upstream 1.5 took. "
                f"Received: scheduler={type(scheduler).__name__}"
            )
        check_frequency(freq, (Frequency.EPOCH, Frequency.BATCH))
        plateau = isinstance(scheduler, ReduceLROnPlateau)
        if plateau and freq is not Frequency.EPOCH:
            raise ValueError(
                "`ReduceLROnPlateau` is stepped with an epoch value, so `freq` must be `Frequency.EPOCH`. "
                f"Received: freq={freq!r}"
            )
        if monitor is not None and not plateau:
            raise ValueError(
                f"`monitor` is only for `ReduceLROnPlateau`; {type(scheduler).__name__} steps without a value. "
                f"Received: monitor={monitor!r}"
            )
        super().__init__(freq)
        self._scheduler = scheduler
        self._name = name
        self._writer = tf_board_writer
        self._monitor: Monitor | None = None
        if plateau:
            mode = MonitorType.MAX if getattr(scheduler, "mode", "min") == "max" else MonitorType.MIN
            self._monitor = Monitor(monitor or "loss", mode)

    @property
    def scheduler(self) -> LRScheduler | ReduceLROnPlateau:
        """The stepped scheduler."""
        return self._scheduler

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each parameter group: `name`, or `name_0`, `name_1`, ..."""
        optimizer = getattr(self._scheduler, "optimizer", None)
        groups = getattr(optimizer, "param_groups", None)
        rates = [float(group["lr"]) for group in groups] if groups is not None else list(self._scheduler.get_last_lr())
        if len(rates) == 1:
            return {self._name: rates[0]}
        return {f"{self._name}_{i}": rate for i, rate in enumerate(rates)}

    def step(self, summary: Mapping[str, Any] | None = None, val_summary: Mapping[str, float] | None = None) -> None:
        if self._monitor is not None:
            self._scheduler.step(self._monitor.read(summary or {}, val_summary))  # type: ignore[arg-type]
        else:
            self._scheduler.step()  # type: ignore[call-arg]  # not a plateau scheduler here

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        if self._writer is not None:
            for key, rate in self.learning_rates().items():
                self._writer.add_scalars(key, {"train": rate}, epoch + 1)
        super().on_epoch_end(epoch, summary, val_summary)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        put_state(
            checkpoint,
            self,
            {"current_step": self.current_step, "scheduler": _scheduler_state(self._scheduler)},
        )

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        state = get_state(checkpoint, self)
        if state is not None:
            self.current_step = int(state["current_step"])
            if state["scheduler"] is not None and callable(getattr(self._scheduler, "load_state_dict", None)):
                self._scheduler.load_state_dict(dict(state["scheduler"]))


def _scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    """A scheduler's `state_dict()`, or None for a schedule of the user's without one (upstream's took any)."""
    state_dict = getattr(scheduler, "state_dict", None)
    return dict(state_dict()) if callable(state_dict) else None
