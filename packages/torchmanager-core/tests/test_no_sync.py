"""The training step never waits for the device: no host reads of tensors per step.

Every way a tensor's value reaches Python (`item`, `tolist`, `float()`, `int()`, `bool()`, `cpu`,
`numpy`) is counted during `fit`; the count must not grow with the number of steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Manager

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")


def count_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(
            self: torch.Tensor, *args: Any, _name: str = name, _original: Callable[..., Any] = original, **kwargs: Any
        ) -> Any:
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


def reads_during_fit(monkeypatch: pytest.MonkeyPatch, steps: int, **fit_kwargs: Any) -> Counter[str]:
    x, y = blobs(8 * steps)
    data = batches(x, y, 8)
    model = linear()
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=torch.nn.CrossEntropyLoss(),
        metrics={"accuracy": Accuracy()},
    )
    with monkeypatch.context() as patch:
        counts = count_reads(patch)
        manager.fit(data, epochs=2, **fit_kwargs)
    return counts


def test_host_reads_do_not_grow_with_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    few = reads_during_fit(monkeypatch, steps=3)
    many = reads_during_fit(monkeypatch, steps=60)
    assert many == few, f"reads grew with the number of steps: {few} -> {many}"
    assert sum(few.values()) <= 2 * 3  # a handful per epoch: the summary, once


def test_validation_and_user_values_do_not_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = blobs(40)
    few = reads_during_fit(monkeypatch, steps=3, val_dataset=batches(x, y, 4))
    many = reads_during_fit(monkeypatch, steps=60, val_dataset=batches(x, y, 4))
    assert many == few
