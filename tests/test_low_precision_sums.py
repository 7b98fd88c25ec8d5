"""Epoch values under `precision="bf16"` and `"16-mixed"` are the float64 means of the batch values
(issue 11, kind 3): every running sum and count the framework keeps is float32 or wider.

The issue's inputs: a loss-dict part computed by a plain callable (`lambda y, t: y.pow(2).mean()`)
and an extra value a custom `train_step`/`test_step` returns, exactly 1.0 (bf16) or 1000.0
(16-mixed) on every one of 512 batches, read 0.5 and inf; here with our own losses and metrics and
plain-callable metrics beside them, in `fit` (training and validation) and in `test`. The right
values come from a hand loop over the same batches under the same autocast, averaged in float64.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_torchrun import torchrun
from tests.workspace import ROOT
from torchmanager import Manager
from torchmanager.losses import CrossEntropy, Loss
from torchmanager.metrics import Metric, SparseCategoricalAccuracy

AUTOCAST = {"bf16": torch.bfloat16, "16-mixed": torch.float16, "32": None}
BATCHES = 512
Part = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def square_mean(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return y.pow(2).mean()


def abs_mean(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return y.abs().mean()


class WithExtra(Manager):
    """A user's manager whose steps also report the batch's mean square output (in the autocast dtype)."""

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        y, loss = self.forward(x_train, y_train)
        assert loss is not None
        self.backward(loss)
        self.optimize()
        summary: dict[str, Any] = {"loss": loss.detach(), "extra": square_mean(y.detach(), y_train)}
        summary.update(self.eval(y.detach(), y_train, training=True))
        return summary

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, Any]:
        y, loss = self.forward(x_test, y_test)
        assert loss is not None
        summary: dict[str, Any] = {"loss": loss.detach(), "extra": square_mean(y.detach(), y_test)}
        summary.update(self.eval(y.detach(), y_test, training=False))
        return summary


def identity_model() -> torch.nn.Module:
    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
    return model


def manager(model: torch.nn.Module, precision: str) -> WithExtra:
    return WithExtra(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),  # the values stay those of the hand loop
        loss_fn={"sq": square_mean, "abs": Loss(abs_mean)},
        metrics={"msq": square_mean, "mabs": Metric(abs_mean)},
        precision=precision,
    )


def hand_means(
    model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], precision: str
) -> dict[str, float]:
    """Each value's float64 mean over the batches, weighted by batch size, computed as a user would by hand."""
    sums: dict[str, float] = {}
    samples = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=AUTOCAST[precision] or torch.bfloat16, enabled=precision != "32"):
        for x, t in data:
            y = model(x)
            n = len(t)
            values = {"sq_loss": square_mean(y, t), "abs_loss": abs_mean(y, t), "msq": square_mean(y, t)}
            values |= {"mabs": abs_mean(y, t), "extra": square_mean(y, t)}
            values["loss"] = values["sq_loss"].float() + values["abs_loss"].float()
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value.double()) * n
            samples += n
    return {name: total / samples for name, total in sums.items()}


def constant_batches(value: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """512 batches on which `y.pow(2).mean()` is exactly `value` in bfloat16 and float16 (identity model)."""
    row = {1.0: [1.0, -1.0, 1.0, -1.0], 1000.0: [60.0, 20.0, 0.0, 0.0]}[value]  # 1000 = (3600 + 400) / 4
    x = torch.tensor([row, row])
    return [(x, torch.zeros(2, 4))] * BATCHES


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="torchmanager")  # put back after the test


@pytest.mark.parametrize(
    ("precision", "value"), [("bf16", 1.0), ("16-mixed", 1000.0), ("bf16", 1000.0), ("16-mixed", 1.0), ("32", 1000.0)]
)
def test_the_issues_constant_batches_read_back_exactly_in_fit_and_test(precision: str, value: float) -> None:
    data = constant_batches(value)
    expected = hand_means(identity_model(), data, precision)
    assert expected["sq_loss"] == value  # the batches are built so: the hand loop reads it exactly
    m = manager(identity_model(), precision)
    _, summary = m.fit(data, epochs=1, val_dataset=data, return_summary=True, device="cpu")
    tested = m.test(data, device="cpu")
    for name, right in expected.items():
        assert summary[name] == right, (name, summary[name], right)
        assert summary[f"val_{name}"] == right, (f"val_{name}", summary[f"val_{name}"], right)
        assert tested[name] == right, (name, tested[name], right)


@pytest.mark.parametrize("precision", ["bf16", "16-mixed", "32"])
def test_varying_batches_average_to_the_float64_mean_of_their_values(precision: str) -> None:
    torch.manual_seed(0)
    model = identity_model()
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(n, 4, generator=gen) * 8, torch.zeros(n, 4)) for n in (1 + i % 3 for i in range(520))]
    expected = hand_means(model, data, precision)
    m = manager(model, precision)
    _, summary = m.fit(data, epochs=1, return_summary=True, device="cpu")
    tested = m.test(data, device="cpu")
    for name, right in expected.items():
        assert summary[name] == pytest.approx(right, rel=1e-5), name
        assert tested[name] == pytest.approx(right, rel=1e-5), name


def test_our_losses_and_metrics_under_bf16_match_float64_functional() -> None:
    """Our cross entropy and accuracy read the bf16 logits autocast gives in float32: the float64 values."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    gen = torch.Generator().manual_seed(2)
    data = [(torch.randn(n, 4, generator=gen) * 3, torch.randint(0, 3, (n,), generator=gen)) for n in [3, 1, 2] * 180]
    m = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        loss_fn=CrossEntropy(),
        metrics={"accuracy": SparseCategoricalAccuracy()},
        precision="bf16",
    )
    tested = m.test(data, device="cpu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.cat([model(x) for x, _ in data]).double()  # the bf16 outputs, exactly
    labels = torch.cat([t for _, t in data])
    assert tested["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert tested["accuracy"] == pytest.approx((logits.argmax(1) == labels).double().mean().item(), rel=1e-6)


@pytest.mark.slow
def test_sums_and_counts_stay_exact_across_two_processes(tmp_path: Path) -> None:
    """Under torchrun (gloo): bf16 sums all-reduced as float32, counts as int64 past 2**24."""
    result = torchrun(ROOT / "tests" / "scripts" / "sum_counts.py", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for rank in (0, 1):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert values["tracker_count"] == 2 * (2**24 + 301)  # a float32 count rounds it to a multiple of 4
        assert values["tracker_mean"] == pytest.approx(301 / (2**24 + 301), rel=1e-6)  # a bfloat16 sum stops at 256
        assert (values["metric_result"], values["metric_count"]) == (1000.0, 2 * 512)
