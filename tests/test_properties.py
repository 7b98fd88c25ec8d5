"""Properties over any batching of the same data (hypothesis): an epoch value never depends on how the
data was cut into batches.

- `manager.test` over any split gives the loss and metrics computed in one shot by torch.nn.functional,
  for our stateful losses and metrics, plain torch losses and plain metric functions alike (the last two
  averaged by the manager, weighted by samples), and for a dict of weighted losses;
- what a custom `test_step` reports beyond them is a sample-weighted mean too;
- `merge_state` of instances fed random splits (empty ones included) equals one instance fed everything.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchmanager import Manager
from torchmanager.losses import MSE, CrossEntropy
from torchmanager.metrics import ConfusionMatrix, SparseCategoricalAccuracy, TopKAccuracy

CLASSES = 4
PROPERTY = settings(  # no time limits: the examples pass or fail alike on a loaded machine
    max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def batched(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Features, labels and a split of them into batches of random sizes (one batch up to one per sample)."""
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    return x, y, sizes


def split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes)))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(5, CLASSES)


def confidence(y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """A plain metric function: the mean top softmax probability of the batch."""
    return y.softmax(-1).max(-1).values.mean()


def close(actual: float, expected: torch.Tensor) -> bool:
    return abs(actual - expected.item()) <= 1e-5 * max(1.0, abs(expected.item()))


@PROPERTY
@given(batched())
def test_test_over_any_batching_equals_the_one_shot_values(data: tuple[torch.Tensor, torch.Tensor, list[int]]) -> None:
    x, y, sizes = data
    net = model()
    with torch.no_grad():
        logits = net(x)
    metrics = {"accuracy": SparseCategoricalAccuracy(), "top2": TopKAccuracy(2), "confidence": confidence}
    ours = Manager(net, loss_fn=CrossEntropy(), metrics=metrics).test(split(x, y, sizes), device="cpu")
    plain = Manager(net, loss_fn=torch.nn.CrossEntropyLoss()).test(split(x, y, sizes), device="cpu")

    expected_loss = F.cross_entropy(logits, y)
    assert close(ours["loss"], expected_loss) and close(plain["loss"], expected_loss)
    assert close(ours["accuracy"], (logits.argmax(-1) == y).double().mean())
    assert close(ours["top2"], (logits.topk(2, -1).indices == y[:, None]).any(-1).double().mean())
    assert close(ours["confidence"], logits.softmax(-1).max(-1).values.mean())


@PROPERTY
@given(batched(), st.floats(0.1, 3.0))
def test_a_dict_of_weighted_losses_over_any_batching(
    data: tuple[torch.Tensor, torch.Tensor, list[int]], weight: float
) -> None:
    x, y, sizes = data
    net = model()
    with torch.no_grad():
        logits = net(x)
    squares = lambda out, label: (out**2).mean()  # noqa: E731  (a plain loss function, averaged by the manager)
    loss_fn = {"ce": CrossEntropy(weight=weight), "l2": squares}
    summary = Manager(net, loss_fn=loss_fn).test(split(x, y, sizes), device="cpu")

    ce, l2 = weight * F.cross_entropy(logits, y), (logits**2).mean()
    assert close(summary["ce_loss"], ce)
    assert close(summary["l2_loss"], l2)
    assert close(summary["loss"], ce + l2)


class ReportsInputs(Manager):
    """A custom step that reports values the losses and metrics do not keep: the manager averages them."""

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        summary = super().test_step(x_test, y_test)
        return {**summary, "x_mean": x_test.mean(), "first_feature": float(x_test[:, 0].mean())}


@PROPERTY
@given(batched())
def test_values_a_step_reports_are_sample_weighted(data: tuple[torch.Tensor, torch.Tensor, list[int]]) -> None:
    x, y, sizes = data
    summary = ReportsInputs(model(), loss_fn=CrossEntropy()).test(split(x, y, sizes), device="cpu")
    assert close(summary["x_mean"], x.mean())  # not the mean of the batch means, unless the batches are even
    assert close(summary["first_feature"], x[:, 0].mean())


STREAMING = {
    "accuracy": (SparseCategoricalAccuracy, lambda logits, y: (logits.argmax(-1) == y).double().mean()),
    "cross_entropy": (CrossEntropy, lambda logits, y: F.cross_entropy(logits, y)),
    "mse": (MSE, lambda logits, y: F.mse_loss(logits, F.one_hot(y, CLASSES).float())),
    "confusion": (
        lambda: ConfusionMatrix(CLASSES),
        lambda logits, y: torch.bincount(y * CLASSES + logits.argmax(-1), minlength=CLASSES**2).reshape(
            CLASSES, CLASSES
        ),
    ),
}


@PROPERTY
@given(batched(), st.sampled_from(sorted(STREAMING)), st.lists(st.integers(0, 40), max_size=3))
def test_merged_states_of_any_split_equal_the_one_shot_value(
    data: tuple[torch.Tensor, torch.Tensor, list[int]], name: str, empty_at: list[int]
) -> None:
    x, y, sizes = data
    make, reference = STREAMING[name]
    with torch.no_grad():
        logits = model()(x)
    label = F.one_hot(y, CLASSES).float() if name == "mse" else y
    parts = []
    for out, target in zip(logits.split(sizes), label.split(sizes)):
        part = make()
        part(out, target)
        parts.append(part)
    for position in empty_at:  # instances that saw no batch merge as nothing
        parts.insert(min(position, len(parts)), make())
    merged = parts[0]
    for part in parts[1:]:
        merged.merge_state(part)

    whole = make()
    whole(logits, label)
    expected = reference(logits, y).to(whole.result.dtype)
    torch.testing.assert_close(whole.result, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged.result, expected, rtol=1e-5, atol=1e-6)
