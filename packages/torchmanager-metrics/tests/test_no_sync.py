"""The hot path: a metric update never reads a tensor back to the host.

On CPU there is no device to wait for, so the test forbids what would wait on one: reading
values (`.item()`, `.tolist()`, `float()`, `bool()`, `.cpu()`, `.numpy()`) and the ops whose
output size depends on the data (`nonzero`, `bincount`, `unique`), which sync on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from metrics_testkit import CASES, FEATURES, LABELS

from torchmanager_metrics import FID


def forbid(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a metric update read a tensor back to the host")

    for name in (
        "item",
        "tolist",
        "cpu",
        "numpy",
        "nonzero",
        "bincount",
        "unique",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
    ):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for name in ("nonzero", "bincount", "unique", "argwhere"):
        monkeypatch.setattr(torch, name, refuse)


@pytest.mark.parametrize("name", sorted(CASES))
def test_updates_do_not_read_tensors_back(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, input, target = CASES[name]
    metric = make()
    metric(input, target)  # the first batch after a reset places the state
    forbid(monkeypatch)
    metric(input, target)
    monkeypatch.undo()
    assert metric.result.numel() >= 1


def test_the_guard_catches_a_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    metric = FID()
    metric(FEATURES, FEATURES.flip(0))
    forbid(monkeypatch)
    with pytest.raises(AssertionError, match="read a tensor back"):
        metric.compute()  # compute may read to the host (FID's square root does): updates may not
    with pytest.raises(AssertionError, match="read a tensor back"):
        torch.bincount(LABELS)


def test_every_exported_metric_class_is_covered() -> None:
    from metrics_testkit import BASES, public_metric_classes

    assert set(public_metric_classes()) - set(BASES) <= set(CASES)
