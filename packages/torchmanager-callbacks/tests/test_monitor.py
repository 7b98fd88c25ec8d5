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


@pytest.mark.parametrize("bad", ["max", 1, "auto"])
def test_monitor_type_must_be_min_or_max(bad: object) -> None:
    with pytest.raises(
        TypeError,
        match=rf"`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None \(from the monitor.s name\). Received: monitor_type={bad!r}",
    ):
        Monitor("loss", bad)  # type: ignore[arg-type]


def test_keeping_the_highest_loss_is_warned_about_where_the_callback_is_made(tmp_path: object) -> None:
    """A loss monitored with MAX given explicitly keeps the worst epoch: BestCheckpoint, EarlyStop and an
    Experiment's monitors say so, pointing at the user's line; the default (inferred), MIN, and MAX on an
    accuracy say nothing."""
    import warnings

    import torch

    import torchmanager
    from torchmanager_callbacks import BestCheckpoint, EarlyStop, Experiment

    model = torch.nn.Linear(2, 2)
    manager = torchmanager.Manager(model, torch.optim.SGD(model.parameters(), lr=0.1))
    makers = {
        "BestCheckpoint": lambda: BestCheckpoint(
            "val_loss", manager, str(tmp_path) + "/best.model", monitor_type=MonitorType.MAX
        ),
        "EarlyStop": lambda: EarlyStop("loss", MonitorType.MAX),
        "Experiment": lambda: Experiment("warned", manager, monitors={"mse": MonitorType.MAX}, root=str(tmp_path)),
    }
    for what, make in makers.items():
        with pytest.warns(UserWarning, match=r"keeps the highest value \(MonitorType.MAX, given\)") as seen:
            make()
        assert seen[0].filename == __file__, what  # the warning names the line that made the callback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Monitor("loss", MonitorType.MIN)
        Monitor("accuracy", MonitorType.MAX)
        BestCheckpoint("val_loss", manager, str(tmp_path) + "/inferred.model")
        Experiment("quiet", manager, monitors=["loss", "accuracy"], root=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        *((name, MonitorType.MIN) for name in ["loss", "val_loss", "ce_loss", "dice_loss", "totalloss", "mse"]),
        *((name, MonitorType.MIN) for name in ["val_mae", "mean_squared_error", "fid", "LPIPS", "val-perplexity"]),
        *((name, MonitorType.MAX) for name in ["accuracy", "val_accuracy", "psnr", "ssim", "f1", "iou", "dice"]),
        *((name, MonitorType.MAX) for name in ["lr", "precision", "recall", "val_mIoU", "lossless_ratio"]),
    ],
)
def test_the_direction_is_inferred_from_the_name(name: str, expected: MonitorType) -> None:
    """As Keras's mode="auto": losses and errors are best at their lowest, the rest at their highest."""
    assert Monitor(name).monitor_type is expected
    assert Monitor(name, MonitorType.MIN).monitor_type is MonitorType.MIN  # an explicit type wins


def test_a_loss_monitor_keeps_its_lowest_epoch(tmp_path: object) -> None:
    """`BestCheckpoint("val_loss")` and `EarlyStop("val_loss")` keep the epoch of the lowest validation loss
    (upstream's MAX default kept the first of 5), `Experiment(monitors=["loss", "accuracy"])` each right way."""
    import os

    from cb_testkit import batches, blobs, make_manager

    from torchmanager_callbacks import BestCheckpoint, EarlyStop, Experiment
    from torchmanager_core import checkpoint

    data = batches(*blobs(32), size=8)
    manager = make_manager(lr=0.5)
    path = os.path.join(str(tmp_path), "best.model")
    best, early = BestCheckpoint("val_loss", manager, path), EarlyStop("val_loss", steps=5)
    experiment = Experiment("run", manager, monitors=["loss", "accuracy"], root=str(tmp_path))
    manager.fit(data, epochs=5, val_dataset=data, callbacks_list=[best, early, experiment])
    losses = [summary["val_loss"] for summary in manager.history]
    lowest = min(range(5), key=losses.__getitem__)
    assert lowest > 0 and best.best_score == losses[lowest] and early.best_epoch == lowest
    assert checkpoint.load(path)["epoch"] == lowest + 1  # the file holds the lowest epoch's run
    types = {c.monitor: c.monitor_type for c in experiment.best_checkpoints}
    assert types == {"loss": MonitorType.MIN, "accuracy": MonitorType.MAX}
