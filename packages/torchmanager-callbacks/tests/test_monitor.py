"""MonitorType and the monitored-value rule shared by BestCheckpoint, EarlyStop and LrScheduler."""

from __future__ import annotations

import math

import pytest

from torchmanager_callbacks import MonitorError, MonitorType
from torchmanager_callbacks.monitor import Monitor


def test_init_scores_are_infinite() -> None:
    # upstream: MonitorType.MAX.init_score == -1, so a metric that stays below -1 never counts as best
    assert MonitorType.MAX.init_score == -math.inf
    assert MonitorType.MIN.init_score == math.inf
    assert Monitor("score", MonitorType.MAX).improved(-5.0)


def test_validation_value_wins_when_there_is_one() -> None:
    monitor = Monitor("accuracy")
    assert monitor.read({"accuracy": 0.1}, {"accuracy": 0.9}) == 0.9
    assert monitor.read({"accuracy": 0.1}, None) == 0.1
    assert Monitor("val_accuracy").read({"accuracy": 0.1}, {"accuracy": 0.9}) == 0.9
    assert Monitor("lr").read({"lr": 0.01}, {"accuracy": 0.9}) == 0.01  # only in training's summary


def test_missing_monitor_names_the_available_keys() -> None:
    with pytest.raises(
        MonitorError,
        match=r"^Monitor `acc` is not in the epoch summary; monitor one of `loss`, `accuracy`, `val_loss`, `val_accuracy`. Received: monitor='acc'$",
    ):
        Monitor("acc").read({"loss": 1.0, "accuracy": 0.5}, {"loss": 1.0, "accuracy": 0.5})
    assert issubclass(MonitorError, KeyError)


def test_min_delta_and_nan() -> None:
    monitor = Monitor("loss", MonitorType.MIN, min_delta=0.1)
    monitor.best = 1.0
    assert not monitor.improved(0.95) and monitor.improved(0.85)
    assert not monitor.improved(math.nan)
    with pytest.raises(ValueError, match=r"`min_delta` must be a finite number >= 0. Received: min_delta=-1"):
        Monitor("loss", min_delta=-1)


@pytest.mark.parametrize("bad", ["max", 1, None])
def test_monitor_type_must_be_min_or_max(bad: object) -> None:
    with pytest.raises(
        TypeError,
        match=rf"`monitor_type` must be `MonitorType.MIN` or `MonitorType.MAX`. Received: monitor_type={bad!r}",
    ):
        Monitor("loss", bad)  # type: ignore[arg-type]


def test_keeping_the_highest_loss_is_warned_about_where_the_callback_is_made(tmp_path: object) -> None:
    """A loss monitored with MAX (upstream's default) keeps the worst epoch: BestCheckpoint, EarlyStop and an
    Experiment's list of monitors say so, pointing at the user's line; MIN, and MAX on an accuracy, say nothing."""
    import warnings

    import torch

    import torchmanager
    from torchmanager_callbacks import BestCheckpoint, EarlyStop, Experiment

    model = torch.nn.Linear(2, 2)
    manager = torchmanager.Manager(model, torch.optim.SGD(model.parameters(), lr=0.1))
    makers = {
        "BestCheckpoint": lambda: BestCheckpoint("val_loss", manager, str(tmp_path) + "/best.model"),
        "EarlyStop": lambda: EarlyStop("loss"),
        "Experiment": lambda: Experiment("warned", manager, monitors=["loss"], root=str(tmp_path)),
    }
    for what, make in makers.items():
        with pytest.warns(
            UserWarning, match=r"keeps the highest value \(MonitorType.MAX, upstream's default\)"
        ) as seen:
            make()
        assert seen[0].filename == __file__, what  # the warning names the line that made the callback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Monitor("loss", MonitorType.MIN)
        Monitor("accuracy", MonitorType.MAX)
        Experiment(
            "quiet", manager, monitors={"loss": MonitorType.MIN, "accuracy": MonitorType.MAX}, root=str(tmp_path)
        )
