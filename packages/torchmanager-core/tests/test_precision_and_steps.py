"""Step options: gradient accumulation, clipping, bf16/fp16 autocast with a grad scaler, torch.compile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from core_testkit import Accuracy, batches, blobs

from torchmanager_core import Callback, Manager, checkpoint


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def sgd_manager(model: torch.nn.Module, **kwargs: Any) -> Manager:
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.5), loss_fn=torch.nn.CrossEntropyLoss(), **kwargs)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_accumulating_4_batches_of_8_equals_one_batch_of_32() -> None:
    x, y = blobs(32)
    accumulated = sgd_manager(mlp(), accumulate_grad_batches=4).fit(batches(x, y, 8), epochs=1)
    whole = sgd_manager(mlp()).fit(batches(x, y, 32), epochs=1)
    assert_same_weights(accumulated, whole)
    assert not torch.equal(accumulated[0].weight, mlp()[0].weight)  # it did train


class Unsized:
    """An iterable of batches without `len`: the loop learns the last window's size from its last batch."""

    def __init__(self, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.data = data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.data)


@pytest.mark.parametrize("sized", [True, False])
def test_the_last_shorter_window_steps_too(sized: bool) -> None:
    x, y = blobs(48)
    data = batches(x, y, 8)  # 6 batches: a window of 4, then one of 2
    model = sgd_manager(mlp(), accumulate_grad_batches=4).fit(data if sized else Unsized(data), epochs=1)

    hand = mlp()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.5)
    for start, size in ((0, 32), (32, 16)):
        loss = F.cross_entropy(hand(x[start : start + size]), y[start : start + size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_same_weights(model, hand)


@pytest.mark.parametrize("option", ["clip_grad_norm", "clip_grad_value"])
def test_clipping_matches_torch_utils_by_hand(option: str) -> None:
    x, y = blobs(40)
    data = batches(x, y, 10)
    model = sgd_manager(mlp(), **{option: 0.05}).fit(data, epochs=2)

    hand = mlp()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.5)
    for _ in range(2):
        for xb, yb in data:
            optimizer.zero_grad()
            F.cross_entropy(hand(xb), yb).backward()
            if option == "clip_grad_norm":
                torch.nn.utils.clip_grad_norm_(hand.parameters(), 0.05)
            else:
                torch.nn.utils.clip_grad_value_(hand.parameters(), 0.05)
            optimizer.step()
    assert_same_weights(model, hand)
    unclipped = sgd_manager(mlp()).fit(data, epochs=2)
    assert not torch.allclose(unclipped[0].weight, hand[0].weight)  # clipping changed the run


def digits_split() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    y = torch.as_tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return batches(x[:1400], y[:1400], 64), batches(x[1400:], y[1400:], 128)


def test_bf16_reaches_the_float32_accuracy_on_digits() -> None:
    pytest.importorskip("sklearn")
    train, test = digits_split()
    results = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        manager = Manager(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            loss_fn=torch.nn.CrossEntropyLoss(),
            metrics={"accuracy": Accuracy()},
            precision=precision,
        )
        manager.fit(train, epochs=15)
        results[precision] = manager.test(test)["accuracy"]
        if precision == "bf16":  # the forward really ran in bfloat16
            out, _ = manager.forward(test[0][0])
            assert out.dtype == torch.bfloat16
    assert results["32"] > 0.95
    assert abs(results["bf16"] - results["32"]) <= 0.01, results


def test_float16_scales_gradients_and_checkpoints_the_scaler(tmp_path: Path) -> None:
    x, y = blobs(64)
    manager = sgd_manager(mlp(), precision="16-mixed")
    manager.fit(batches(x, y, 16), epochs=2)
    assert manager.scaler is not None
    manager.scaler.update(new_scale=1234.0)  # a scale no fresh scaler starts from
    manager.save_checkpoint(tmp_path / "fp16.model")
    assert checkpoint.load(tmp_path / "fp16.model")["grad_scaler"]["scale"] == 1234.0

    resumed = sgd_manager(mlp(), precision="16-mixed")
    resumed.load_checkpoint(tmp_path / "fp16.model")
    assert resumed.scaler is None  # made by `fit`, once the device is known
    resumed.fit(batches(x, y, 16), epochs=2)  # nothing left to train: the scaler is made and restored only
    assert resumed.scaler is not None and resumed.scaler.get_scale() == 1234.0
    assert resumed.current_epoch == 2


def test_compiled_model_trains_like_the_eager_one() -> None:
    x, y = blobs(48)
    data = batches(x, y, 16)
    eager = sgd_manager(mlp()).fit(data, epochs=2)
    manager = sgd_manager(mlp(), compile={"backend": "aot_eager"})
    compiled = manager.fit(data, epochs=2)
    assert type(compiled) is torch.nn.Sequential and compiled is manager.raw_model  # unwrapped for the user
    assert_same_weights(compiled, eager)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "64"}, r"`precision` must be one of .*Received: precision='64'"),
        (
            {"accumulate_grad_batches": 0},
            r"`accumulate_grad_batches` must be a positive int\. Received: accumulate_grad_batches=0",
        ),
        (
            {"clip_grad_norm": -1.0},
            r"`clip_grad_norm` must be a positive number or None\. Received: clip_grad_norm=-1.0",
        ),
    ],
)
def test_bad_step_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sgd_manager(mlp(), **kwargs)


def test_bf16_true_trains_in_bfloat16_like_a_hand_loop_and_sums_in_float32() -> None:
    """`precision="bf16-true"`: weights, gradients and compute in bfloat16; the epoch loss still summed in float32."""
    x, y = blobs(48)
    data = batches(x, y, 16)
    manager = sgd_manager(mlp(), precision="bf16-true")
    _, summary = manager.fit(data, epochs=2, return_summary=True)
    model = manager.raw_model
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())

    hand = mlp().to(torch.bfloat16)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.5)
    for _ in range(2):
        losses = []
        for xb, yb in data:
            loss = F.cross_entropy(hand(xb.to(torch.bfloat16)), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append((loss.double().item(), len(yb)))
    for ours, theirs in zip(model.parameters(), hand.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    expected = sum(value * n for value, n in losses) / sum(n for _, n in losses)
    assert summary["loss"] == pytest.approx(expected, rel=1e-6)  # a bfloat16 sum would round to 3 digits


class _Inf(torch.nn.Module):
    """Wraps a model; its output is inf on the batches listed (their float16 gradients overflow)."""

    def __init__(self, model: torch.nn.Module, bad: set[int]) -> None:
        super().__init__()
        self.model, self.bad, self.calls = model, bad, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.calls += 1
        return out * float("inf") if self.calls - 1 in self.bad else out


def test_an_update_the_grad_scaler_skips_is_not_an_optimizer_update() -> None:
    """16-mixed: a step whose gradients overflow is skipped by the scaler; `global_step` counts applied updates only,
    so a per-update schedule (stepped when `global_step` moves) moves only when the weights do."""
    import warnings

    x, y = blobs(64)
    model = _Inf(mlp(), bad={0, 2})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen: list[int] = []

    class Record(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            seen.append(self.manager.global_step)

    manager = Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), precision="16-mixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would fail the test
        manager.fit(batches(x, y, 16), epochs=1, callbacks_list=[Record()], on_nonfinite_loss="stop")
    assert seen == [0, 1, 1, 2]  # batches 0 and 2 overflowed: two updates applied
    assert manager.global_step == 2
