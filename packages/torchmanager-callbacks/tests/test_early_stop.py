"""EarlyStop: the epoch it stops at (hand-counted), min_delta, best weights, resume."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from cb_testkit import FakeManager, batches, blobs, make_manager

from torchmanager_callbacks import EarlyStop, LambdaCallback, LastCheckpoint, MonitorType
from torchmanager_core import StopTraining, checkpoint
from torchmanager_core.callbacks import CallbackList


def stop_epoch(callback: EarlyStop, values: list[float]) -> int | None:
    for epoch, value in enumerate(values):
        try:
            callback.on_epoch_end(epoch, {"loss": 0.0, "accuracy": value})
        except StopTraining as stop:
            return stop.epoch
    return None


def test_stops_after_steps_epochs_without_improvement() -> None:
    # best 0.5 at epoch 1; epochs 2, 3, 4 do not beat it: the third of them stops (upstream: one later)
    assert stop_epoch(EarlyStop("accuracy", MonitorType.MAX, steps=3), [0.4, 0.5, 0.5, 0.45, 0.3, 0.9]) == 4
    assert stop_epoch(EarlyStop("accuracy", MonitorType.MAX, steps=3), [0.4, 0.5, 0.5, 0.6, 0.3, 0.2]) is None
    assert stop_epoch(EarlyStop("accuracy", MonitorType.MIN, steps=1), [0.4, 0.3, 0.35]) == 2
    # upstream started MAX at the smallest positive float: negative values never improved
    assert stop_epoch(EarlyStop("accuracy", steps=2), [-3.0, -2.0, -1.0, -0.5]) is None


def test_min_delta() -> None:
    assert stop_epoch(EarlyStop("accuracy", steps=2, min_delta=0.05), [0.5, 0.52, 0.54, 0.6]) == 2


def test_stops_a_real_fit_through_the_manager_flag_so_later_callbacks_finish_the_epoch(tmp_path: Any) -> None:
    manager = make_manager(lr=0.0)  # nothing is learnt: the loss never improves after epoch 0
    ends: list[int] = []
    early = EarlyStop("loss", MonitorType.MIN, steps=2, manager=manager)
    last = LastCheckpoint(manager, str(tmp_path / "last.model"))
    manager.fit(
        batches(*blobs(16), size=8),
        epochs=10,
        callbacks_list=[early, last, LambdaCallback(post_fn=lambda e, s: ends.append(e))],
    )
    assert ends == [0, 1, 2] and manager.current_epoch == 3
    assert checkpoint.load(tmp_path / "last.model")["epoch"] == 3


def test_restore_best_weights() -> None:
    manager = FakeManager()
    early = EarlyStop("accuracy", steps=2, restore_best_weights=True, manager=manager)
    stopped = None
    for epoch, value in enumerate([0.1, 0.8, 0.5, 0.4]):
        manager.raw_model.weight.data.fill_(float(epoch))
        early.on_epoch_end(epoch, {"accuracy": value})
        if manager.stop_training:
            stopped = epoch
            break
    early.on_train_end(manager.raw_model)
    assert stopped == 3 and torch.all(manager.raw_model.weight == 1.0)
    alone = EarlyStop("loss", MonitorType.MIN, restore_best_weights=True)  # fit gives it its manager; without one:
    with pytest.raises(
        TypeError,
        match=r"`restore_best_weights=True` needs the manager to copy the best weights from: list the callback in "
        r"`manager.fit\(..., callbacks_list=\[...\]\)`, or pass `manager=`. Received: manager=None",
    ):
        alone.on_epoch_end(0, {"loss": 1.0})


def test_state_survives_a_resume(tmp_path: Any) -> None:
    manager = FakeManager()
    early = EarlyStop("accuracy", steps=3, restore_best_weights=True, manager=manager)
    manager.callbacks = CallbackList([early])
    for epoch, value in enumerate([0.5, 0.4, 0.3]):
        manager.raw_model.weight.data.fill_(float(epoch))
        early.on_epoch_end(epoch, {"accuracy": value})
    manager.save_checkpoint(str(tmp_path / "c.model"))
    resumed = EarlyStop("accuracy", steps=3)
    resumed.on_load_checkpoint(checkpoint.load(tmp_path / "c.model"))
    assert (resumed.wait, resumed.best_score) == (2, 0.5)
    assert torch.all(resumed.best_weights["weight"] == 0.0)  # type: ignore[index]
    with pytest.raises(StopTraining):
        resumed.on_epoch_end(3, {"accuracy": 0.45})


def test_bad_steps() -> None:
    with pytest.raises(
        ValueError, match=r"`steps` must be an int >= 1 \(epochs without improvement\). Received: steps=0"
    ):
        EarlyStop("loss", MonitorType.MIN, 0)
    with pytest.raises(
        TypeError,
        match=r"`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None \(from the monitor.s name\). Received: monitor_type=0",
    ):
        EarlyStop("loss", 0)  # type: ignore[arg-type]


def test_its_messages_follow_the_epoch_line_and_say_which_weights_come_back(caplog: pytest.LogCaptureFixture) -> None:
    manager = make_manager(lr=0.0)  # nothing changes: the first epoch stays the best (MIN with min_delta)
    early = EarlyStop("loss", MonitorType.MIN, steps=2, min_delta=0.1, restore_best_weights=True)
    data = batches(*blobs(16), size=8)
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        manager.fit(data, epochs=10, callbacks_list=[early])
    lines = [record.getMessage() for record in caplog.records]
    epoch3 = next(i for i, line in enumerate(lines) if line.startswith("Epoch 3/10:"))
    assert lines[epoch3 + 1] == "Early stop at epoch 3: `loss` did not improve for 2 epochs"
    restored = next(line for line in lines if line.startswith("EarlyStop: restored"))
    assert restored.startswith(f"EarlyStop: restored the weights of epoch 1 (`loss`={manager.history[0]['loss']:.4f})")
    assert "the last epoch's summary describes the weights before this restore" in restored
    assert len(manager.history) == 3
