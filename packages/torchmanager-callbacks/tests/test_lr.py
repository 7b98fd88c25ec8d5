"""LrScheduler: the learning rate of every epoch (against the same torch scheduler stepped by hand), plateau."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import Frequency, LambdaCallback, LastCheckpoint, LrScheduler
from torchmanager_core import checkpoint


def test_step_lr_per_epoch_and_lr_in_the_summary() -> None:
    manager = make_manager(lr=0.8)
    seen: list[float] = []
    scheduler = LrScheduler(torch.optim.lr_scheduler.StepLR(manager.optimizer, step_size=2, gamma=0.5))
    manager.fit(
        batches(*blobs(16), size=8),
        epochs=5,
        callbacks_list=[scheduler, LambdaCallback(post_fn=lambda e, s: seen.append(s["lr"]))],
    )
    assert seen == [0.8, 0.8, 0.4, 0.4, 0.2]  # the rate each epoch trained with
    assert manager.optimizer.param_groups[0]["lr"] == 0.8 * 0.5 ** (5 // 2)  # after 5 steps


def test_batch_frequency_steps_after_every_batch() -> None:
    manager = make_manager(lr=1.0)
    callback = LrScheduler(torch.optim.lr_scheduler.ExponentialLR(manager.optimizer, gamma=0.5), Frequency.BATCH)
    manager.fit(batches(*blobs(24), size=8), epochs=2, callbacks_list=[callback])
    assert manager.optimizer.param_groups[0]["lr"] == 0.5**6


def test_reduce_on_plateau_gets_the_monitored_validation_value() -> None:
    manager = make_manager(lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(manager.optimizer, mode="max", patience=0, factor=0.1)
    callback = LrScheduler(plateau, monitor="accuracy")
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), mode="max", patience=0, factor=0.1
    )
    for epoch, (train, val) in enumerate([(0.5, 0.6), (0.9, 0.6), (0.95, 0.7), (0.99, 0.65)]):
        summary = {"loss": 1.0, "accuracy": train}
        callback.on_epoch_end(epoch, summary, {"loss": 1.0, "accuracy": val})
        reference.step(val)
        assert manager.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])
    assert manager.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_scheduler_state_survives_a_resume(tmp_path: Any) -> None:
    data = batches(*blobs(16), size=8)
    manager = make_manager(lr=1.0)
    path = str(tmp_path / "last.model")
    lr = LrScheduler(torch.optim.lr_scheduler.StepLR(manager.optimizer, 1, gamma=0.5))
    manager.fit(data, epochs=2, callbacks_list=[lr, LastCheckpoint(manager, path)])
    assert checkpoint.load(path)["callbacks"]["LrScheduler#0"]["scheduler"]["last_epoch"] == 2
    resumed = make_manager(lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(resumed.optimizer, 1, gamma=0.5)
    resumed.fit(data, epochs=3, callbacks_list=[LrScheduler(scheduler)], resume_from=path)
    assert scheduler.last_epoch == 3 and resumed.optimizer.param_groups[0]["lr"] == 0.125


def test_bad_arguments() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(
        ValueError,
        match=r"`ReduceLROnPlateau` is stepped with an epoch value, so `freq` must be `Frequency.EPOCH`. Received: freq=<Frequency.BATCH: 1>",
    ):
        LrScheduler(plateau, Frequency.BATCH)
    with pytest.raises(
        ValueError,
        match=r"`monitor` is only for `ReduceLROnPlateau`; StepLR steps without a value. Received: monitor='loss'",
    ):
        LrScheduler(torch.optim.lr_scheduler.StepLR(optimizer, 1), monitor="loss")
    with pytest.raises(
        TypeError, match=r"`scheduler` must be a torch.optim.lr_scheduler scheduler .* Received: scheduler=SGD"
    ):
        LrScheduler(optimizer)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["StepLR", "OneCycleLR", "ReduceLROnPlateau"])
def test_a_scheduler_passed_straight_in_the_callbacks_says_to_wrap_it(kind: str) -> None:
    """A Keras habit: the scheduler itself in `callbacks_list`. It is refused with the way forward (not wrapped
    silently: whether it steps per epoch or per update is the user's to say, and a wrong guess trains on)."""
    manager = make_manager()
    make = {
        "StepLR": lambda: torch.optim.lr_scheduler.StepLR(manager.optimizer, 1),
        "OneCycleLR": lambda: torch.optim.lr_scheduler.OneCycleLR(manager.optimizer, 1.0, total_steps=4),
        "ReduceLROnPlateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(manager.optimizer),
    }[kind]
    before = [p.clone() for p in manager.raw_model.parameters()]
    with pytest.raises(
        TypeError,
        match=r"A learning-rate scheduler is not a callback: wrap it in `torchmanager.callbacks.LrScheduler\(scheduler\)` "
        r"to step it after each epoch, or `LrScheduler\(scheduler, Frequency.BATCH\)` after each optimizer update "
        rf"\(OneCycleLR, warmups\). Received: callbacks_list\[1\]={kind}$",
    ):
        manager.fit(batches(*blobs(16), size=8), epochs=1, callbacks_list=[LambdaCallback(), make()])  # type: ignore[list-item]
    assert all(torch.equal(a, b) for a, b in zip(before, manager.raw_model.parameters()))  # nothing trained
