"""The run's state: accumulation windows, optimizer steps, custom steps, modes, nested evaluation, generators.

Each right value comes from a hand-written loop or a hand computation, never from the manager.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Callback, Manager, StopTraining
from torchmanager_core.callbacks import CallbackList
from torchmanager_core.loop.run import RandomSnapshot


class Unsized:
    """An iterable of batches without `len` (a generator pipeline, a stream)."""

    def __init__(self, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.data = data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.data)


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def hand_accumulated(
    model: torch.nn.Module,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    window: int,
    epochs: int,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    limit: int | None = None,
) -> list[float]:
    """SGD over windows of `window` batches, each batch's loss divided by its window's real size; the lr of each update."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    used = []
    for _ in range(epochs):
        epoch = data[:limit] if limit is not None else data
        for start in range(0, len(epoch), window):
            part = epoch[start : start + window]
            optimizer.zero_grad()
            for x, y in part:
                (F.cross_entropy(model(x), y) / len(part)).backward()
            optimizer.step()
            used.append(optimizer.param_groups[0]["lr"])
    return used


@pytest.mark.parametrize(
    ("samples", "window", "sized"),
    [(40, 2, False), (40, 2, True), (56, 3, False), (48, 4, False), (48, 4, True), (8, 3, False), (64, 8, False)],
)
def test_the_last_window_is_divided_by_its_real_size(samples: int, window: int, sized: bool) -> None:
    """5 batches with windows of 2 from an unsized iterable (the issue's input), and other lengths and windows."""
    x, y = blobs(samples)
    data = batches(x, y, 8)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager = Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), accumulate_grad_batches=window)
    manager.fit(data if sized else Unsized(data), epochs=2)
    hand = mlp()
    hand_accumulated(hand, data, window, epochs=2)
    for ours, theirs in zip(model.parameters(), hand.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert manager.global_step == 2 * -(-len(data) // window)  # one update per window


def test_iterations_end_an_accumulation_window_early_too() -> None:
    x, y = blobs(80)
    data = batches(x, y, 8)  # 10 batches; 13 iterations: one epoch, then 3 batches of the second
    model = mlp()
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        loss_fn=torch.nn.CrossEntropyLoss(),
        accumulate_grad_batches=4,
    )
    manager.fit(data, iterations=13)
    hand = mlp()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1, momentum=0.9)
    for part in (data[0:4], data[4:8], data[8:10], data[0:3]):
        optimizer.zero_grad()
        for xb, yb in part:
            (F.cross_entropy(hand(xb), yb) / len(part)).backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), hand.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert manager.global_step == 4


class TwoForwards(Manager):
    """A custom step that calls `forward` twice per batch (the second on a noisy input) and returns its own values."""

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        _, clean = self.forward(x_train, y_train)
        _, noisy = self.forward(x_train + 1.0, y_train)
        assert clean is not None and noisy is not None
        loss = 0.25 * clean + 0.75 * noisy
        self.backward(loss)
        self.optimize()
        return {"loss": loss.detach(), "my_value": clean.detach() * 2}


def test_a_custom_train_step_is_believed() -> None:
    x, y = blobs(24)
    data = batches(x, y, 10)  # batches of 10, 10 and 4: the means are sample-weighted
    model = linear()
    manager = TwoForwards(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    _, summary = manager.fit(data, epochs=1, return_summary=True)

    hand = linear()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    loss_sum = value_sum = 0.0
    for xb, yb in data:
        clean, noisy = F.cross_entropy(hand(xb), yb), F.cross_entropy(hand(xb + 1.0), yb)
        loss = 0.25 * clean + 0.75 * noisy
        loss_sum, value_sum = loss_sum + loss.item() * len(yb), value_sum + 2 * clean.item() * len(yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert summary["loss"] == pytest.approx(loss_sum / 24, rel=1e-6)  # not the mean of the six loss calls
    assert summary["my_value"] == pytest.approx(value_sum / 24, rel=1e-6)
    assert list(summary)[:2] == ["loss", "my_value"]


class WrongEpochEnd(Callback):
    def on_epoch_end(self, epoch: int) -> None:  # type: ignore[override]
        pass


class WrongBatchEnd(Callback):
    def on_batch_end(self, batch: int, logs: Any) -> None:  # type: ignore[override]
        pass


@pytest.mark.parametrize(
    ("callback", "hook"), [(WrongEpochEnd(), "on_epoch_end(epoch)"), (WrongBatchEnd(), "on_batch_end(batch, logs)")]
)
def test_a_hook_that_cannot_take_the_loops_arguments_fails_before_any_batch(callback: Callback, hook: str) -> None:
    steps = 0

    class Counting(Manager):
        def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
            nonlocal steps
            steps += 1
            return super().train_step(x_train, y_train)

    model = linear()
    manager = Counting(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    x, y = blobs(16)
    name = hook.split("(")[0]
    with pytest.raises(
        TypeError, match=rf"The callback callbacks_list\[1\] of type {type(callback).__name__} defines `{name}\("
    ):
        manager.fit(batches(x, y, 8), epochs=1, callbacks_list=[Callback(), callback])
    assert steps == 0
    with pytest.raises(TypeError, match=rf"define it as `def {name}\(self, "):
        CallbackList([callback])


class Frozen(torch.nn.Module):
    """A frozen backbone in eval mode (BatchNorm and Dropout) under a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5))
        self.backbone.requires_grad_(False).eval()
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ModeRecordingLoss(torch.nn.Module):
    """Cross-entropy that records `self.training` at each call (upstream code branches on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return F.cross_entropy(y, label)


def test_modes_the_user_chose_are_kept_and_evaluation_gives_them_back() -> None:
    model = Frozen()
    stats = copy.deepcopy(model.backbone[1].state_dict())
    loss = ModeRecordingLoss()
    manager = Manager(model, torch.optim.SGD(model.head.parameters(), lr=0.1), loss_fn=loss)
    x, y = blobs(48)
    seen: list[tuple[bool, bool, bool]] = []

    class Probe(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            # the backbone's output is the same on every call: no dropout, frozen statistics
            probe = torch.randn(6, 4)
            with torch.no_grad():
                seen.append(
                    (
                        model.backbone.training,
                        model.head.training,
                        bool(torch.equal(model.backbone(probe), model.backbone(probe))),
                    )
                )

    manager.fit(batches(x, y, 8), epochs=3, val_dataset=batches(x, y, 16), callbacks_list=[Probe()])
    for name, value in model.backbone[1].state_dict().items():
        assert torch.equal(value, stats[name]), name  # the BatchNorm statistics did not move
    assert set(seen) == {(False, True, True)}
    # the loss module: train mode on the 18 training batches, eval mode on the 3 validation batches of each epoch
    assert loss.modes == ([True] * 6 + [False] * 3) * 3
    manager.test(batches(x, y, 16))
    assert loss.modes[-3:] == [False] * 3 and loss.training
    assert not model.backbone.training and model.head.training  # as the user left them


def test_a_test_called_from_a_callback_leaves_the_training_epoch_as_it_was() -> None:
    x, y = blobs(64)
    data, other = batches(x[:48], y[:48], 8), batches(x[48:], y[48:], 8)

    def make() -> Manager:
        model = linear()
        return Manager(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=torch.nn.CrossEntropyLoss(),
            metrics={"accuracy": Accuracy()},
        )

    tested: list[dict[str, float]] = []

    class TestsMidEpoch(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if batch in (1, 4):
                tested.append(self.manager.test(other))

    plain = make()
    _, expected = plain.fit(data, epochs=2, val_dataset=other, return_summary=True)
    nested = make()
    _, summary = nested.fit(data, epochs=2, val_dataset=other, callbacks_list=[TestsMidEpoch()], return_summary=True)
    assert summary == expected  # the training values, the validation values, the weights: untouched
    assert nested.history == plain.history
    for a, b in zip(plain.raw_model.parameters(), nested.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # and each test saw the model of its moment, on the whole test data
    assert len(tested) == 4 and all(set(t) == {"loss", "accuracy"} for t in tested)


class StopAt(Callback):
    def __init__(self, batch: int, how: str) -> None:
        self.batch, self.how = batch, how

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if batch == self.batch:
            if self.how == "raise":
                raise StopTraining(0, "stopping here")
            self.manager.stop_training = True


@pytest.mark.parametrize("how", ["flag", "raise"])
def test_a_stop_mid_epoch_ends_at_that_batch_and_a_later_fit_goes_on_from_there(how: str) -> None:
    x, y = blobs(64)
    model = linear()
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())
    manager.fit(batches(x, y, 8), epochs=3, callbacks_list=[StopAt(2, how)])
    assert manager.global_step == 3 and manager.history == []  # three batches; the epoch did not end
    assert (manager.current_epoch, manager.batch_index) == (0, 3)  # a later fit goes on from there
    hand = linear()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    for xb, yb in batches(x, y, 8)[:3]:
        optimizer.zero_grad()
        F.cross_entropy(hand(xb), yb).backward()
        optimizer.step()
    assert torch.equal(hand.weight, model.weight)
    manager.fit(batches(x, y, 8), epochs=1)  # the rest of epoch 1: 5 more batches
    for xb, yb in batches(x, y, 8)[3:]:
        optimizer.zero_grad()
        F.cross_entropy(hand(xb), yb).backward()
        optimizer.step()
    assert torch.equal(hand.weight, model.weight) and manager.global_step == 8 and manager.current_epoch == 1


def loader_with(kind: str, seed: int = 7) -> torch.utils.data.DataLoader[Any]:
    """A shuffled loader whose order comes from a generator the user gave (not the global one)."""
    x, y = blobs(72, seed=3)
    dataset = torch.utils.data.TensorDataset(x, y)
    generator = torch.Generator().manual_seed(seed)
    if kind == "loader":
        return torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, generator=generator)
    sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    return torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler)


class SaveAt(Callback):
    """Saves after batch `batch` of epoch `epoch`, or at the end of that epoch when `batch` is None."""

    def __init__(self, path: Path, epoch: int, batch: int | None) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.current_epoch == self.epoch and batch == self.batch:
            self.manager.save_checkpoint(self.path)

    def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
        if epoch == self.epoch and self.batch is None:
            self.manager.save_checkpoint(self.path)


def dropout_manager(seed: int) -> Manager:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))
    return Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss_fn=torch.nn.CrossEntropyLoss()
    )


@pytest.mark.parametrize("kind", ["loader", "sampler"])
@pytest.mark.parametrize(("epoch", "batch"), [(1, 3), (0, 8), (0, None)])  # mid-epoch, the last batch, the epoch's end
def test_the_data_generators_come_back_on_resume(tmp_path: Path, kind: str, epoch: int, batch: int | None) -> None:
    path = tmp_path / "ckpt.model"
    reference = dropout_manager(1)
    reference.fit(loader_with(kind), epochs=3, callbacks_list=[SaveAt(path, epoch, batch)])

    resumed = dropout_manager(2)  # other weights, other global random state
    torch.manual_seed(99)
    resumed.fit(loader_with(kind, seed=12345), epochs=3, resume_from=path)  # its generator starts elsewhere
    for a, b in zip(reference.raw_model.parameters(), resumed.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # with the global generators restored but not the data's, the data order differs, and so do the weights
    unrestored = dropout_manager(2)
    unrestored.load_checkpoint(path)
    run = unrestored._run
    assert run.resume_rng is not None and len(run.resume_rng.data) == 1
    run.resume_rng = RandomSnapshot(packed=run.resume_rng.generators)
    if run.epoch_rng is not None:
        run.epoch_rng = RandomSnapshot(packed=run.epoch_rng.generators)
    unrestored.fit(loader_with(kind, seed=12345), epochs=3)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(reference.raw_model.parameters(), unrestored.raw_model.parameters(), strict=True)
    )
