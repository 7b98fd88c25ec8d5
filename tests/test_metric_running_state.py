"""A metric's running state (issue 20, kind 1): what parking a pass, a checkpoint and a resume keep.

The running state of a loss or metric is what an uninterrupted run carries from one batch to the
next. Each situation below must give the epoch values (and weights) of a run that was not
interrupted, bit for bit: a `test()` called from a callback in the middle of a training epoch,
a validation inside the epoch, a checkpoint written in the middle of an epoch and resumed by a
fresh manager (the file read back with `weights_only=True`), a progress bar that reads the values
while the epoch runs. The metrics are real torchmetrics 1.9 metrics (states that `state_dict()`
leaves out: sums, means, a "cat" state kept as a list of tensors) and ours (whose batch sums
wait on the host before they are added).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchmetrics
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC
from torchmetrics.regression import MeanSquaredError, SpearmanCorrCoef

import torchmanager
from torchmanager.callbacks import Callback
from torchmanager.losses import CrossEntropy
from torchmanager.metrics import SparseCategoricalAccuracy, TopKAccuracy
from torchmanager_core import StopTraining, checkpoint

Batches = list[tuple[torch.Tensor, torch.Tensor]]
EPOCHS = 2


class Regression(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(1)


def classification() -> tuple[torch.nn.Module, Any, dict[str, Any], Batches, Batches]:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 4, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 56, 8)]
    other = [(x[i : i + 10], y[i : i + 10]) for i in range(56, 96, 10)]
    metrics = {"accuracy": MulticlassAccuracy(num_classes=3, average="micro"), "auroc": MulticlassAUROC(num_classes=3)}
    return torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss(), metrics, data, other


def regression() -> tuple[torch.nn.Module, Any, dict[str, Any], Batches, Batches]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=gen)
    y = x[:, 0].abs() + 0.5 + 0.1 * torch.rand(96, generator=gen)  # positive: MeanMetric weighs the outputs by them
    data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 56, 8)]
    other = [(x[i : i + 10], y[i : i + 10]) for i in range(56, 96, 10)]
    metrics = {"mean": torchmetrics.MeanMetric(), "mse": MeanSquaredError(), "spearman": SpearmanCorrCoef()}
    return Regression(), torch.nn.MSELoss(), metrics, data, other


def ours() -> tuple[torch.nn.Module, Any, dict[str, Any], Batches, Batches]:
    """Our loss and metrics: their batch sums wait on the host (64 batches at most) before they are added."""
    model, _, _, data, other = classification()
    return model, CrossEntropy(), {"accuracy": SparseCategoricalAccuracy(), "top2": TopKAccuracy(2)}, data, other


SETUPS: dict[str, Callable[[], tuple[torch.nn.Module, Any, dict[str, Any], Batches, Batches]]] = {
    "torchmetrics classification": classification,
    "torchmetrics regression": regression,
    "ours": ours,
}


def make(setup: str) -> tuple[torchmanager.Manager, Batches, Batches]:  # type: ignore[type-arg]
    torch.manual_seed(0)  # the same initial weights for every manager of a test
    model, loss_fn, metrics, data, other = SETUPS[setup]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    return torchmanager.Manager(model, optimizer, loss_fn=loss_fn, metrics=metrics), data, other


def assert_same_run(manager: torchmanager.Manager, reference: torchmanager.Manager) -> None:  # type: ignore[type-arg]
    assert manager.history == reference.history  # every epoch value, bit for bit
    for ours_, theirs in zip(manager.raw_model.parameters(), reference.raw_model.parameters(), strict=True):
        assert torch.equal(ours_, theirs)


@pytest.fixture(params=sorted(SETUPS))
def setup(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def uninterrupted(setup: str) -> torchmanager.Manager:  # type: ignore[type-arg]
    manager, data, _ = make(setup)
    manager.fit(data, epochs=EPOCHS, show_verbose=False)
    return manager


def test_a_test_called_from_a_callback_leaves_the_training_epoch_as_it_was(
    setup: str,
    uninterrupted: torchmanager.Manager,  # type: ignore[type-arg]
) -> None:
    """The issue's example: with torchmetrics, such a `test()` changed the epoch's accuracy (0.35, want 0.375)."""
    manager, data, other = make(setup)
    tested: list[tuple[dict[str, Any], dict[str, float]]] = []

    class TestsMidEpoch(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if batch in (1, 4):
                weights = {k: v.clone() for k, v in self.manager.raw_model.state_dict().items()}
                tested.append((weights, self.manager.test(other, show_verbose=False)))

    manager.fit(data, epochs=EPOCHS, callbacks_list=[TestsMidEpoch()], show_verbose=False)
    assert_same_run(manager, uninterrupted)
    for weights, values in tested:  # each test saw the whole test data with the model of its moment
        reference, _, _ = make(setup)
        reference.raw_model.load_state_dict(weights)
        assert values == reference.test(other, show_verbose=False)


def test_validation_inside_the_epoch_leaves_the_training_values_as_they_were(
    setup: str,
    uninterrupted: torchmanager.Manager,  # type: ignore[type-arg]
) -> None:
    manager, data, other = make(setup)
    manager.fit(data, epochs=EPOCHS, val_dataset=other, show_verbose=False)
    training = [{k: v for k, v in entry.items() if not k.startswith("val_")} for entry in manager.history]
    assert training == list(uninterrupted.history)


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 4)], ids=["epoch 1 batch 3", "epoch 2 batch 5"])
def test_a_mid_epoch_checkpoint_resumes_the_metrics_where_they_were(
    setup: str,
    uninterrupted: torchmanager.Manager,  # type: ignore[type-arg]
    stop_at: tuple[int, int],
    tmp_path: Path,
) -> None:
    """The issue's example: with torchmetrics, a mid-epoch resume gave an accuracy of 0.3125."""
    path = tmp_path / "mid.model"
    manager, data, _ = make(setup)

    class SaveAndStop(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if (self.manager.current_epoch, batch) == stop_at:
                self.manager.save_checkpoint(path)
                raise StopTraining(batch)

    manager.fit(data, epochs=EPOCHS, callbacks_list=[SaveAndStop()], show_verbose=False)
    saved = checkpoint.load(path)  # read with weights_only=True: lists of tensors and ints only
    assert saved["values"]["metrics"]["fns"].keys() == uninterrupted.metric_fns.keys()
    resumed, _, _ = make(setup)
    resumed.fit(data, epochs=EPOCHS, resume_from=path, show_verbose=False)
    assert_same_run(resumed, uninterrupted)


def test_a_progress_bar_reading_the_values_changes_none(
    setup: str,
    uninterrupted: torchmanager.Manager,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bar reads the running values while the epoch runs (here after every batch): no value moves by a bit."""
    from torchmanager_core import progress

    reads: list[int] = []
    step = progress.EpochProgress.step

    def every_batch(self: progress.EpochProgress, read: Callable[[], Any]) -> None:
        reads.append(len(read()))
        step(self, read)

    monkeypatch.setattr(progress.EpochProgress, "step", every_batch)
    manager, data, _ = make(setup)
    manager.fit(data, epochs=EPOCHS, show_verbose=True)
    assert len(reads) == EPOCHS * len(data)
    assert_same_run(manager, uninterrupted)
