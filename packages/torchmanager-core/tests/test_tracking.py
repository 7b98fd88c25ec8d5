"""`merge_summaries`: the one rule that makes an epoch's summary from its training and validation values."""

from __future__ import annotations

from typing import Any

import torch
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Callback, Manager
from torchmanager_core.tracking import merge_summaries


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
