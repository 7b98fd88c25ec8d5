"""Combinations of the loop and the callbacks where defects hid: each right value computed independently.

- validation that fails while training is fine, with a checkpoint callback;
- an LR schedule and an Experiment in either order, resumed either way, against one uninterrupted run;
- a per-step schedule under gradient accumulation (steps are optimizer updates);
- a validation-only metric named `val_acc`, seen by every consumer of the summary.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import torchmanager
from torchmanager.callbacks import (
    CSVLogger,
    Experiment,
    Frequency,
    LambdaCallback,
    LastCheckpoint,
    LrScheduler,
)
from torchmanager_core import checkpoint


def blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return x, (x[:, 0] > 0).long()


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


DATA = batches(*blobs(32), size=8)


def make_manager(seed: int = 0, lr: float = 1.0, **kwargs: Any) -> torchmanager.Manager:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return torchmanager.Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), **kwargs)


def test_nan_validation_does_not_block_saving_a_finite_training_run(tmp_path: Path) -> None:
    x, y = blobs(16, seed=1)
    nan_val = [(torch.full_like(x, math.nan), y)]
    manager = make_manager(lr=0.1)
    path = tmp_path / "last.model"
    _, summary = manager.fit(
        DATA, epochs=2, val_dataset=nan_val, callbacks_list=[LastCheckpoint(None, str(path))], return_summary=True
    )
    assert math.isfinite(summary["loss"]) and math.isnan(summary["val_loss"])
    saved = checkpoint.load(path)
    assert saved["epoch"] == 2
    assert torch.equal(saved["model"]["weight"], manager.raw_model.weight)


def schedule_run(
    root: Path, epochs: int, order: str, resume: str | None = None
) -> tuple[torchmanager.Manager, LrScheduler]:
    manager = make_manager()
    assert manager.optimizer is not None
    scheduler = LrScheduler(torch.optim.lr_scheduler.LambdaLR(manager.optimizer, lambda e: 0.5**e))
    experiment = Experiment("sched", manager, resume=resume == "experiment", root=str(root))
    callbacks = [experiment, scheduler] if order == "experiment-first" else [scheduler, experiment]
    resume_from = root / "sched.exp" / "checkpoints" / "last.model" if resume == "fit" else None
    manager.fit(DATA, epochs=epochs, callbacks_list=callbacks, resume_from=resume_from)
    return manager, scheduler


@pytest.mark.parametrize("order", ["experiment-first", "scheduler-first"])
@pytest.mark.parametrize("resume", ["experiment", "fit"])
def test_a_schedule_resumes_where_an_uninterrupted_run_would_be(tmp_path: Path, order: str, resume: str) -> None:
    uninterrupted, _ = schedule_run(tmp_path / "a", 4, order)
    schedule_run(tmp_path / "b", 3, order)
    last = checkpoint.load(tmp_path / "b" / "sched.exp" / "checkpoints" / "last.model")
    state = last["callbacks"]["LrScheduler#0"]["scheduler"]
    assert (state["last_epoch"], state["_last_lr"]) == (3, [0.125])  # the state at the end of epoch 3, in any order
    resumed, scheduler = schedule_run(tmp_path / "b", 4, order, resume=resume)
    assert resumed.history[3]["lr"] == 0.125  # epoch 4 trained at 0.5 ** 3
    assert resumed.history == uninterrupted.history  # epochs 1 to 3 came back with the checkpoint
    assert scheduler.scheduler.get_last_lr() == [0.0625]
    assert uninterrupted.optimizer is not None and uninterrupted.optimizer.param_groups[0]["lr"] == 0.0625
    assert torch.equal(resumed.raw_model.weight, uninterrupted.raw_model.weight)


@pytest.mark.parametrize(("window", "batches_per_epoch"), [(4, 8), (3, 8), (1, 5)])
def test_a_per_step_schedule_steps_once_per_optimizer_update(window: int, batches_per_epoch: int) -> None:
    x, y = blobs(8 * batches_per_epoch)
    data = batches(x, y, 8)
    manager = make_manager(accumulate_grad_batches=window)
    optimizer = manager.optimizer
    assert optimizer is not None
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    used: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a scheduler steps before the optimizer
        manager.fit(data, epochs=2, callbacks_list=[LrScheduler(scheduler, Frequency.BATCH)])
    updates = 2 * -(-batches_per_epoch // window)
    assert used == [0.5**k for k in range(updates)]  # the input: 1, 0.5, 0.25, 0.125
    assert scheduler.last_epoch == updates == manager.global_step


class ValAcc:
    """A validation-only metric (upstream's `val_` convention): runs in validation and test only."""

    def __call__(self, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return (y.argmax(-1) == label).float().mean()


def test_a_metric_named_val_acc_is_val_acc_everywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = make_manager(lr=0.1, metrics={"val_acc": ValAcc()})
    seen: list[dict[str, float]] = []
    csv_path = tmp_path / "log.csv"
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        _, summary = manager.fit(
            DATA,
            epochs=1,
            val_dataset=DATA,
            callbacks_list=[LambdaCallback(post_fn=lambda e, s: seen.append(s)), CSVLogger(str(csv_path))],
            return_summary=True,
        )
    x, y = torch.cat([b[0] for b in DATA]), torch.cat([b[1] for b in DATA])
    expected = (manager.raw_model(x).argmax(-1) == y).float().mean().item()
    for where in (summary, seen[0], manager.history[0]):
        assert "val_val_acc" not in where and where["val_acc"] == pytest.approx(expected)
    assert manager.test(DATA)["acc"] == pytest.approx(expected)  # `test()` names it as upstream 1.5 did
    with open(csv_path) as file:
        header = next(csv.reader(file))
    assert "val_acc" in header and "val_val_acc" not in header
    assert "val_acc=" in caplog.text and "val_val_acc" not in caplog.text


def test_a_checkpoint_holds_every_callbacks_state_of_its_epoch_whatever_the_order(tmp_path: Path) -> None:
    """LastCheckpoint first, then a callback that changes its state in the same on_epoch_end."""
    counts: list[int] = []

    class Counter(torchmanager.callbacks.Callback):
        def __init__(self) -> None:
            self.epochs = 0

        def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
            self.epochs += 1
            counts.append(self.epochs)

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["callbacks"]["Counter"] = {"epochs": self.epochs}

    manager = make_manager(lr=0.1)
    path = tmp_path / "last.model"
    manager.fit(DATA, epochs=3, callbacks_list=[LastCheckpoint(None, str(path)), Counter()])
    assert checkpoint.load(path)["callbacks"]["Counter"] == {"epochs": 3} and counts == [1, 2, 3]


def test_fit_reproduces_a_hand_loop_with_validation_accumulation_and_a_schedule() -> None:
    """The loop, accumulation, validation and an epoch schedule together, against a hand-written loop."""
    x, y = blobs(56, seed=4)
    data, val = batches(x, y, 8), batches(*blobs(24, seed=5), size=8)
    manager = make_manager(lr=0.5, accumulate_grad_batches=3)
    assert manager.optimizer is not None
    scheduler = torch.optim.lr_scheduler.StepLR(manager.optimizer, step_size=1, gamma=0.5)
    manager.fit(data, epochs=3, val_dataset=val, callbacks_list=[LrScheduler(scheduler)])

    torch.manual_seed(0)
    hand = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.5)
    hand_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    val_losses = []
    for _ in range(3):
        for start in range(0, 7, 3):
            part = data[start : start + 3]
            optimizer.zero_grad()
            for xb, yb in part:
                (F.cross_entropy(hand(xb), yb) / len(part)).backward()
            optimizer.step()
        with torch.no_grad():
            vx, vy = torch.cat([b[0] for b in val]), torch.cat([b[1] for b in val])
            val_losses.append(F.cross_entropy(hand(vx), vy).item())
        hand_scheduler.step()
    torch.testing.assert_close(manager.raw_model.weight, hand.weight, rtol=1e-5, atol=1e-6)
    assert [h["val_loss"] for h in manager.history] == pytest.approx(val_losses, rel=1e-5)
    assert [h["lr"] for h in manager.history] == [0.5, 0.25, 0.125]


class DoubledAccuracy(torchmanager.metrics.SparseCategoricalAccuracy):
    """A subclass replacing `forward`: its value must count, whichever path the step takes."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(input, target)


def plain_accuracy(y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return (y.argmax(-1) == label).float().mean()


@pytest.mark.parametrize(
    ("metric", "scale"),
    [(torchmanager.metrics.SparseCategoricalAccuracy, 1.0), (DoubledAccuracy, 2.0), (lambda: plain_accuracy, 1.0)],
)
def test_a_step_whose_values_nobody_reads_gives_the_same_epoch(metric: Any, scale: float) -> None:
    """Without a reader the default step makes no batch values (the accuracy counts hits directly)."""
    x, y = blobs(44, seed=2)
    data = batches(x, y, 8)  # 5 batches of 8 and one of 4

    def run(read: bool) -> tuple[torchmanager.Manager, list[dict[str, Any]]]:
        returned: list[dict[str, Any]] = []
        manager = make_manager(lr=0.1, metrics={"accuracy": metric()})
        callbacks = [LambdaCallback(post_fn=lambda b, s: returned.append(s), freq=Frequency.BATCH)] if read else []
        manager.fit(data, epochs=2, callbacks_list=callbacks)
        return manager, returned

    fast, nothing = run(read=False)
    full, returned = run(read=True)
    assert nothing == [] and all(set(s) == {"loss", "accuracy"} for s in returned)
    assert fast.history == full.history
    for a, b in zip(fast.raw_model.parameters(), full.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    hand = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    for epoch in range(2):
        correct = 0
        for xb, yb in data:
            out = hand(xb)
            correct += int((out.argmax(-1) == yb).sum())
            optimizer.zero_grad()
            F.cross_entropy(out, yb).backward()
            optimizer.step()
        assert fast.history[epoch]["accuracy"] == pytest.approx(scale * correct / 44, rel=1e-6)


def test_history_holds_the_whole_run_across_fits_and_a_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`history[i]` is epoch i + 1's summary for the run: after a second `fit` that goes on, after a resume from a
    checkpoint (with validation and a schedule), equal to the uninterrupted run's; a `fit` with nothing left to
    train says so and changes nothing; `initial_epoch=0` starts a new history."""
    val = batches(*blobs(12, seed=1), size=5)

    def run(manager: torchmanager.Manager, epochs: int, **kwargs: Any) -> Any:
        assert manager.optimizer is not None
        schedule = LrScheduler(torch.optim.lr_scheduler.StepLR(manager.optimizer, 1, gamma=0.5))
        path = str(tmp_path / "last.model")
        callbacks = [schedule, LastCheckpoint(manager, path)]
        return manager.fit(
            DATA, epochs=epochs, val_dataset=val, callbacks_list=callbacks, return_summary=True, **kwargs
        )

    uninterrupted = make_manager()
    run(uninterrupted, 4)
    assert [h["lr"] for h in uninterrupted.history] == [1.0, 0.5, 0.25, 0.125]

    going_on = make_manager()
    run(going_on, 2)
    resumed = make_manager(seed=5)  # other weights: all of it must come from the checkpoint
    run(resumed, 4, resume_from=tmp_path / "last.model")
    run(going_on, 4)
    assert resumed.history == uninterrupted.history
    assert going_on.history == uninterrupted.history

    caplog.set_level(logging.INFO, logger="torchmanager")
    _, summary = run(going_on, 4)
    assert (
        "Nothing to train: the run has done 4 epochs already and `epochs=4` counts the epochs done too; pass "
        "epochs=5" in caplog.text
    )
    assert going_on.history == uninterrupted.history and summary == uninterrupted.history[-1]

    run(going_on, 1, initial_epoch=0)
    assert len(going_on.history) == 1


def test_keywords_fit_does_not_take_reach_an_overridden_train() -> None:
    """Upstream let `fit` pass extra keywords to `_train`: a subclass that takes them still gets them (the
    default `_train` refuses them, see test_bad_input)."""

    seen: list[float] = []

    class Noisy(torchmanager.Manager):
        def _train(self, *args: Any, noise: float = 0.0, **kwargs: Any) -> dict[str, float]:
            seen.append(noise)
            return super()._train(*args, **kwargs)

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    manager = Noisy(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    manager.fit(DATA, epochs=2, noise=0.5)
    assert seen == [0.5, 0.5]


@pytest.mark.parametrize("evaluation", ["validation", "test at epoch ends", "predict at batch ends"])
def test_evaluating_inside_fit_leaves_the_training_run_as_it_was(evaluation: str) -> None:
    """Dropout and a shuffled data set draw from the global generator; an evaluation pass inside `fit` (its
    DataLoader draws a seed) must not shift them: the training losses, the weights and the random state after
    `fit` equal those of the same run without it."""
    from torchmanager.data import Dataset

    x, y = blobs(60, seed=2)
    other_x, other_y = blobs(20, seed=3)

    def run(evaluation: str | None) -> tuple[list[float], list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 2))
        manager = torchmanager.Manager(
            model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
        )
        train = Dataset.from_tensor_slices((x, y), batch_size=16, shuffle=True)
        evaluate = Dataset.from_tensor_slices((other_x, other_y), batch_size=7, shuffle=True)
        callbacks = []
        if evaluation == "test at epoch ends":
            callbacks.append(LambdaCallback(post_fn=lambda *_: manager.test(evaluate)))
        if evaluation == "predict at batch ends":
            callbacks.append(LambdaCallback(post_fn=lambda *_: manager.predict(evaluate), freq=Frequency.BATCH))
        validation = evaluate if evaluation == "validation" else None
        manager.fit(train, epochs=3, val_dataset=validation, callbacks_list=callbacks)
        return [h["loss"] for h in manager.history], [p.detach().clone() for p in model.parameters()], torch.rand(3)

    plain_losses, plain_weights, plain_next = run(None)
    losses, weights, next_draws = run(evaluation)
    assert losses == plain_losses
    assert all(map(torch.equal, weights, plain_weights))
    assert torch.equal(next_draws, plain_next)
