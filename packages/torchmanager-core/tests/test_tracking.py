"""`merge_summaries`: the one rule that makes an epoch's summary from its training and validation values."""

from __future__ import annotations

from typing import Any

import torch
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Callback, Manager
from torchmanager_core.tracking import MeanTracker, merge_summaries


def test_validation_names_get_val_once_after_the_training_ones() -> None:
    merged = merge_summaries({"loss": 1.0, "accuracy": 0.5}, {"loss": 2.0, "val_extra": 3.0, "accuracy": 0.25})
    assert list(merged.items()) == [
        ("loss", 1.0),
        ("accuracy", 0.5),
        ("val_loss", 2.0),
        ("val_extra", 3.0),  # already named for validation: not val_val_extra
        ("val_accuracy", 0.25),
    ]
    assert merge_summaries({"val_loss": 1.0}, {"loss": 2.0}) == {"val_loss": 2.0}  # the validation value wins
    assert merge_summaries({"loss": 1.0}, None) == merge_summaries({"loss": 1.0}, {}) == {"loss": 1.0}


def test_it_is_the_summary_fit_returns() -> None:
    """fit's own merge (return_summary) agrees with the helper on the last epoch's two summaries."""
    seen: list[tuple[Any, Any]] = []

    class Record(Callback):
        def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
            seen.append((dict(summary), dict(val_summary or {})))

    x, y = blobs(24)
    model = linear()
    manager = Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), {"accuracy": Accuracy()}
    )
    _, summary = manager.fit(
        batches(x, y, 8), epochs=2, val_dataset=batches(x, y, 12), callbacks_list=[Record()], return_summary=True
    )
    assert summary == merge_summaries(*seen[-1])


def test_a_tracked_value_is_a_copy_of_what_the_step_returned() -> None:
    """A step may change its returned tensor in place afterwards (a buffer it reuses, a CUDA graph's output): the
    running mean holds what was returned at the time (by hand: (1 * 2 + 3 * 1) / 3)."""
    tracker = MeanTracker()
    value = torch.tensor(1.0)
    tracker.update("a", value, 2)
    value.add_(10)  # the step's buffer, reused
    value.fill_(3.0)
    tracker.update("a", value, 1)
    value.zero_()
    assert torch.equal(tracker.means()["a"], torch.tensor(5.0 / 3))


def test_a_user_metric_runs_without_a_graph_in_training() -> None:
    """A metric class whose `forward` is the user's, and a metric made from a function, count a training batch
    under `no_grad` (the model's outputs require grad): no graph is built and dropped each step."""
    from torchmanager_metrics import Metric

    seen: list[bool] = []

    class Mine(Metric):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_grad_enabled())
            return (input.argmax(1) == target).float().mean()

    def fn(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_grad_enabled())
        return (input.argmax(1) == target).float().mean()

    model = linear()
    manager = Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), {"a": Mine(), "b": Metric(fn)}
    )
    manager.fit(batches(*blobs(16), 8), epochs=1, show_verbose=False)
    assert seen == [False] * 4
