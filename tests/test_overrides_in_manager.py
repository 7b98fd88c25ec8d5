"""A manager honours every override of its losses and metrics (issue 11, kind 6).

The issue's inputs: a `MeanIoU` subclass and a `MultiLosses` subclass overriding `forward`; their
override was never called, in `fit` or in `test`. Also: an overridden `update`, and hooks on a
loss or metric module, as the manager calls them every batch. The right values come from the
override applied by hand to every batch, averaged over samples in float64.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from torchmanager import Manager
from torchmanager.losses import CrossEntropy, FocalCrossEntropy, MultiLosses
from torchmanager.metrics import MeanIoU, SparseCategoricalAccuracy, mean_iou


class HalfIoU(MeanIoU):
    """A user's IoU: half of upstream's batch IoU (the batch IoU is what the subclass averages)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input, target) / 2


class WithPenalty(MultiLosses):
    """A user's total: the parts plus an L2 penalty on the logits."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input, target) + 0.1 * input.square().mean()


class CountingAccuracy(SparseCategoricalAccuracy):
    """A user's update that counts its calls and keeps the default state."""

    calls = 0

    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().update(input, target)


def data(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)) for n in (3, 1, 4, 2, 5)]


def weighted_mean(values: list[torch.Tensor], batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    sizes = [len(y) for _, y in batches]
    return float(sum(v.double() * n for v, n in zip(values, sizes)) / sum(sizes))


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="torchmanager")  # put back after the test


def test_overridden_forwards_are_the_values_of_fit_and_test() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    batches = data()
    CountingAccuracy.calls = 0
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=WithPenalty([CrossEntropy(), FocalCrossEntropy(gamma=2, weight=0.5)]),
        metrics={"iou": HalfIoU(dim=1), "accuracy": CountingAccuracy()},
    )
    _, summary = manager.fit(batches, epochs=1, val_dataset=batches, return_summary=True, device="cpu")
    tested = manager.test(batches, device="cpu")

    with torch.no_grad():
        outputs = [model(x) for x, _ in batches]
    focal = FocalCrossEntropy(gamma=2)
    losses = [
        F.cross_entropy(y, t) + 0.5 * focal.evaluate(y, t) + 0.1 * y.square().mean()
        for y, (_, t) in zip(outputs, batches)
    ]
    ious = [mean_iou(y, t, dim=1) / 2 for y, (_, t) in zip(outputs, batches)]
    for values in (summary, {k[4:]: v for k, v in summary.items() if k.startswith("val_")}, tested):
        assert values["loss"] == pytest.approx(weighted_mean(losses, batches), rel=1e-6)
        assert values["iou"] == pytest.approx(weighted_mean(ious, batches), rel=1e-6)
    assert CountingAccuracy.calls == 3 * len(batches)  # training, validation and test each called it per batch


def test_hooks_on_losses_and_metrics_fire_every_batch_under_the_manager() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    batches = data(seed=1)
    loss, accuracy = CrossEntropy(), SparseCategoricalAccuracy()
    seen: dict[str, list[Any]] = {"loss": [], "accuracy": []}
    loss.register_forward_hook(lambda module, args, output: seen["loss"].append(output.detach()))
    accuracy.register_forward_hook(lambda module, args, output: seen["accuracy"].append(output))
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.0), loss, {"accuracy": accuracy})
    tested = manager.test(batches, device="cpu")
    with torch.no_grad():
        outputs = [model(x) for x, _ in batches]
    torch.testing.assert_close(
        torch.stack(seen["loss"]), torch.stack([F.cross_entropy(y, t) for y, (_, t) in zip(outputs, batches)])
    )
    assert len(seen["accuracy"]) == len(batches)
    assert tested["loss"] == pytest.approx(
        F.cross_entropy(torch.cat(outputs), torch.cat([t for _, t in batches])).item(), rel=1e-6
    )
