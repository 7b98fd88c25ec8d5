"""One value, one path (issue 20, kind 5): an epoch value does not depend on which path computed it.

A loss or metric whose batch value is a mean over something other than the batch's samples
(tokens of sequences of different lengths, pixels of images of different sizes, the labels a
cross entropy did not ignore, class weights) must report, on every path, the value of all the
data at once: the default step that only counts, the default step whose values a callback reads,
a subclass whose `train_step` is a copy of the default one, validation, and `test()`. The model
trains with a learning rate of 0, so every pass sees the same weights and the reference is one
computation over all the data with `torch.nn.functional`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import torchmanager
from benchmarks.bench_loops import CopiedStep as PlainStep  # the default `train_step`, copied
from torchmanager.callbacks import Callback
from torchmanager.losses import MSE, BCEWithLogits, CrossEntropy, FocalCrossEntropy
from torchmanager.metrics import MAE, BinaryAccuracy, SparseCategoricalAccuracy, TopKAccuracy
from torchmanager.metrics import MSE as MSEMetric

Batches = list[tuple[torch.Tensor, torch.Tensor]]


class ReadsBatchValues(Callback):
    """Reads every batch's summary (so the default step makes its batch values)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Mapping[str, Any]] = []

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] | None = None) -> None:
        self.seen.append(dict(summary or {}))


def every_path(
    model: torch.nn.Module,
    data: Batches,
    loss_fn: Callable[[], Any],
    metrics: Callable[[], dict[str, Any]],
) -> dict[str, dict[str, float]]:
    """The epoch values of each path over `data` (the model's weights do not move: learning rate 0)."""

    def manager(cls: type[torchmanager.Manager] = torchmanager.Manager) -> torchmanager.Manager:  # type: ignore[type-arg]
        copied = copy.deepcopy(model)
        return cls(copied, torch.optim.SGD(copied.parameters(), lr=0.0), loss_fn=loss_fn(), metrics=metrics())

    def fit(m: torchmanager.Manager, **kwargs: Any) -> dict[str, float]:  # type: ignore[type-arg]
        _, summary = m.fit(data, epochs=1, return_summary=True, show_verbose=False, **kwargs)
        return dict(summary)

    reader = ReadsBatchValues()
    read = fit(manager(), callbacks_list=[reader])
    assert reader.seen and reader.seen[0], "the callback must have been given the batch values"
    validated = fit(manager(), val_dataset=data)
    paths = {
        "counting step": fit(manager()),
        "batch values read": read,
        "train_step copied": fit(manager(PlainStep)),
        "validation": {name[4:]: value for name, value in validated.items() if name.startswith("val_")},
        "test()": manager().test(data, show_verbose=False),
    }
    for name, summary in paths.items():
        paths[name] = {key: value for key, value in summary.items() if not key.startswith("lr")}
    return paths


def assert_every_path(paths: Mapping[str, Mapping[str, float]], expected: Mapping[str, float]) -> None:
    for path, summary in paths.items():
        for name, value in expected.items():
            assert summary[name] == pytest.approx(value, rel=1e-5, abs=1e-6), f"{name} on the path `{path}`"


class Tokens(torch.nn.Module):
    """Per-token class scores: `(N, T, F)` features to `(N, C, T)` logits (classes on dim 1, as cross entropy takes)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).permute(0, 2, 1)


def sequences(lengths: list[int], ignored: float = 0.0) -> Batches:
    """Batches of 2 sequences of each length; a share `ignored` of the labels is -100 (padding)."""
    gen = torch.Generator().manual_seed(1)
    data = []
    for length in lengths:
        x = torch.randn(2, length, 4, generator=gen)
        y = torch.randint(0, 5, (2, length), generator=gen)
        y[torch.rand(2, length, generator=gen) < ignored] = -100
        data.append((x, y))
    return data


def test_the_issue_example_per_token_accuracy_over_sequences_of_different_lengths() -> None:
    """Issue 20 kind 5: 0.375 without a callback reading batch values, 0.354 with one and in validation."""
    torch.manual_seed(0)
    model, data = Tokens(), sequences([3, 8, 2, 7])
    paths = every_path(model, data, CrossEntropy, lambda: {"accuracy": SparseCategoricalAccuracy(dim=1)})
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(1).flatten() for x, _ in data])
    labels = torch.cat([y.flatten() for _, y in data])
    assert_every_path(paths, {"accuracy": (predicted == labels).double().mean().item()})


def test_token_losses_and_metrics_with_ignored_labels_and_class_weights() -> None:
    """Cross entropy over tokens with ignored labels and class weights, top-k accuracy over tokens."""
    torch.manual_seed(0)
    model, data = Tokens(), sequences([3, 9, 1, 6], ignored=0.3)
    class_weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])

    def loss() -> Any:
        return CrossEntropy(class_weight, ignore_index=-100)

    def metrics() -> dict[str, Any]:
        return {"top2": TopKAccuracy(2, dim=1)}

    paths = every_path(model, data, loss, metrics)
    with torch.no_grad():
        logits = torch.cat([model(x).permute(0, 2, 1).reshape(-1, 5) for x, _ in data])
    labels = torch.cat([y.flatten() for _, y in data])
    top2 = logits.topk(2, dim=1).indices.eq(labels[:, None]).any(1)
    expected = {
        "loss": F.cross_entropy(logits, labels, weight=class_weight, ignore_index=-100).item(),
        "top2": top2.double().mean().item(),
    }
    assert_every_path(paths, expected)


def test_cross_entropy_of_samples_with_ignored_labels_and_class_weights() -> None:
    """The 2-dim logits of a classifier (the training step's fast path) over batches of uneven sizes."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    gen = torch.Generator().manual_seed(2)
    data = []
    for size in (3, 8, 5, 1):
        y = torch.randint(0, 4, (size,), generator=gen)
        y[torch.rand(size, generator=gen) < 0.4] = 7  # ignored
        data.append((torch.randn(size, 6, generator=gen), y))
    class_weight = torch.tensor([0.5, 2.0, 1.0, 4.0])

    def losses() -> Any:
        return {"ce": CrossEntropy(class_weight, ignore_index=7), "focal": FocalCrossEntropy(gamma=2, ignore_index=7)}

    paths = every_path(model, data, losses, dict)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data])
    labels = torch.cat([y for _, y in data])
    ce = F.cross_entropy(logits, labels, weight=class_weight, ignore_index=7).item()
    kept = labels != 7
    per_element = F.cross_entropy(logits[kept], labels[kept], reduction="none")
    focal = ((1 - torch.exp(-per_element)) ** 2 * per_element).mean().item()
    assert_every_path(paths, {"loss": ce + focal, "ce_loss": ce, "focal_loss": focal})


class Pixels(torch.nn.Module):
    """A per-pixel map: `(N, 1, H, W)` to `(N, 1, H, W)`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_pixel_losses_and_metrics_over_images_of_different_sizes() -> None:
    torch.manual_seed(0)
    model = Pixels()
    gen = torch.Generator().manual_seed(3)
    data = [
        (torch.randn(2, 1, h, w, generator=gen), torch.rand(2, 1, h, w, generator=gen))
        for h, w in ((2, 3), (6, 5), (1, 1), (4, 4))
    ]

    def losses() -> Any:
        return {"mse": MSE(), "bce": BCEWithLogits()}

    def metrics() -> dict[str, Any]:
        return {"mae": MAE(), "mse": MSEMetric(), "binary": BinaryAccuracy(from_logits=True)}

    paths = every_path(model, data, losses, metrics)
    with torch.no_grad():
        out = torch.cat([model(x).flatten() for x, _ in data])
    labels = torch.cat([y.flatten() for _, y in data])
    mse, bce = F.mse_loss(out, labels).item(), F.binary_cross_entropy_with_logits(out, labels).item()
    expected = {
        "loss": mse + bce,
        "mse_loss": mse,
        "bce_loss": bce,
        "mae": F.l1_loss(out, labels).item(),
        "mse": mse,
        "binary": ((out.sigmoid() > 0.5) == (labels > 0.5)).double().mean().item(),
    }
    assert_every_path(paths, expected)


def test_the_copied_step_reports_its_own_values_when_they_are_not_the_losses() -> None:
    """A custom step is believed: values it returns that are not what the loss objects made are what it reports."""

    class Halved(torchmanager.Manager):  # type: ignore[type-arg]
        def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
            _, loss = self.forward(x_train, y_train)
            assert loss is not None
            self.backward(loss)
            self.optimize()
            return {"loss": loss.detach() / 2}

    torch.manual_seed(0)
    model, data = Tokens(), sequences([3, 8, 2, 7])
    m = Halved(model, torch.optim.SGD(model.parameters(), lr=0.0), loss_fn=CrossEntropy())
    _, summary = m.fit(data, epochs=1, return_summary=True, show_verbose=False)
    with torch.no_grad():
        batch_losses = [F.cross_entropy(model(x), y).item() / 2 for x, y in data]
    sizes = [len(y) for _, y in data]  # a value the step made is averaged over the batches' samples
    expected = sum(v * n for v, n in zip(batch_losses, sizes, strict=True)) / sum(sizes)
    assert summary["loss"] == pytest.approx(expected, rel=1e-6)
