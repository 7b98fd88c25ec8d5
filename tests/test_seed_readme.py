"""The seed README's Manager sections, run as written on the meta-package's API.

Each test follows one README snippet, with its `...` filled in by the smallest real thing, and
checks what the snippet promises against an independent computation.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
import torch
import torch.nn.functional as F

import torchmanager
from torchmanager import BasicTestingManager, BasicTrainingManager, Manager, TestingManager
from torchmanager.data import Dataset

NUM_CLASSES = 3


class CustomDataset(Dataset):
    """The README's dataset: `unbatched_len` and `__getitem__` over in-memory tensors."""

    def __init__(self, x: torch.Tensor, y: Any, batch_size: int) -> None:
        super().__init__(batch_size, num_workers=0)
        self.x, self.y = x, y

    @property
    def unbatched_len(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        label = {k: v[index] for k, v in self.y.items()} if isinstance(self.y, dict) else self.y[index]
        return self.x[index], label


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


class PytorchModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_manager_fit_and_test_as_in_the_readme() -> None:
    torch.manual_seed(0)
    model = PytorchModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = torchmanager.losses.CrossEntropy()
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = torchmanager.Manager(model, optimizer, loss_fn=loss_fn, metrics=metrics)

    training_dataset = CustomDataset(*make_data(96, seed=1), batch_size=16)
    val_dataset = CustomDataset(*make_data(40, seed=2), batch_size=16)
    testing_dataset = CustomDataset(*make_data(50, seed=3), batch_size=16)
    show_verbose = False
    trained = manager.fit(training_dataset, epochs=10, val_dataset=val_dataset, show_verbose=show_verbose)
    summary = manager.test(testing_dataset, show_verbose=show_verbose)

    assert trained is model
    x, y = make_data(50, seed=3)
    with torch.no_grad():
        logits = model(x)
    assert summary["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert summary["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item(), abs=1e-6)
    assert summary["accuracy"] > 0.58  # learnt: the majority class is half the data


def test_saved_model_loads_without_torchmanager(tmp_path) -> None:
    model = PytorchModel()
    manager = torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )
    model = manager.fit(CustomDataset(*make_data(32), batch_size=8), epochs=1)
    torch.save(model, tmp_path / "model.pth")
    loaded = torch.load(tmp_path / "model.pth", weights_only=False)
    x, _ = make_data(8)
    assert torch.equal(loaded(x), model(x))


def test_multiple_losses_sum_with_weights() -> None:
    # loss_fn = {'loss1': CrossEntropy(weight=w1), 'loss2': Dice()}: total = w1 * loss1 + loss2
    w1 = 0.3
    loss_fn = {"loss1": torchmanager.losses.CrossEntropy(weight=w1), "loss2": torchmanager.losses.Dice()}
    model = PytorchModel()
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn)
    x, y = make_data(30)
    summary = manager.test(CustomDataset(x, y, batch_size=7))

    with torch.no_grad():
        logits = model(x)
    ce = F.cross_entropy(logits, y).item()
    p, t = logits.softmax(1), F.one_hot(y, NUM_CLASSES).float()
    # Dice as upstream computes it over the whole batch; batches of 7 are averaged per sample
    dice_by_batch = []
    for i in range(0, 30, 7):
        pb, tb = p[i : i + 7], t[i : i + 7]
        dice_by_batch.append((1 - (2 * (pb * tb).sum() + 1e-6) / (pb.sum() + tb.sum() + 1e-6)).item() * len(pb))
    dice = sum(dice_by_batch) / 30
    assert summary["loss1_loss"] == pytest.approx(w1 * ce, rel=1e-5)
    assert summary["loss2_loss"] == pytest.approx(dice, rel=1e-4)
    assert summary["loss"] == pytest.approx(w1 * ce + dice, rel=1e-4)


class ModelOutputDict(TypedDict):
    output1: torch.Tensor
    output2: torch.Tensor


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, NUM_CLASSES), torch.nn.Linear(4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> ModelOutputDict:
        return {"output1": self.a(x), "output2": self.b(x)}


@pytest.mark.parametrize("dict_label", [False, True], ids=["tensor-label", "dict-label"])
def test_losses_pick_their_target(dict_label: bool) -> None:
    loss_fn = {
        "loss1": torchmanager.losses.CrossEntropy(target="output1"),
        "loss2": torchmanager.losses.CrossEntropy(target="output2", weight=2),
    }
    model = TwoHeads()
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn)
    x, y = make_data(20)
    y2 = (y + 1) % NUM_CLASSES
    label: Any = {"output1": y, "output2": y2} if dict_label else y
    summary = manager.test(CustomDataset(x, label, batch_size=20))

    with torch.no_grad():
        out = model(x)
    expected1 = F.cross_entropy(out["output1"], y).item()
    expected2 = 2 * F.cross_entropy(out["output2"], y2 if dict_label else y).item()
    assert summary["loss1_loss"] == pytest.approx(expected1, rel=1e-5)
    assert summary["loss2_loss"] == pytest.approx(expected2, rel=1e-5)
    assert summary["loss"] == pytest.approx(expected1 + expected2, rel=1e-5)


def test_devices_section_on_a_machine_without_gpus() -> None:
    model = PytorchModel()
    manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy())
    data = CustomDataset(*make_data(16), batch_size=8)
    gpus: list[torch.device] | torch.device = [torch.device("cpu")]
    model = manager.fit(data, epochs=1, use_multi_gpus=True)  # falls back to the one device
    model = manager.fit(data, epochs=1, use_multi_gpus=True, devices=gpus)
    manager.test(data, use_multi_gpus=True, devices=gpus)
    assert next(model.parameters()).device.type == "cpu"


# "Customize training/testing algorithm": the four subclass patterns, with `self` added.


class CustomManager(Manager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained_batches = 0

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, float]:
        summary = super().train_step(x_train, y_train)
        self.trained_batches += 1
        summary["batch_size"] = float(len(x_train))  # a user value the loop averages
        return summary

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, float]:
        summary = super().test_step(x_test, y_test)
        summary["twice_loss"] = 2 * summary["loss"]
        return summary


def test_custom_manager_extends_the_default_steps() -> None:
    model = PytorchModel()
    manager = CustomManager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )
    x, y = make_data(20)
    _, summary = manager.fit(CustomDataset(x, y, batch_size=8), epochs=1, return_summary=True)
    assert manager.trained_batches == 3
    assert summary["batch_size"] == pytest.approx((8 * 8 + 8 * 8 + 4 * 4) / 20)  # sample-weighted, as every value
    result = manager.test(CustomDataset(x, y, batch_size=20))
    assert result["twice_loss"] == pytest.approx(2 * result["loss"], rel=1e-6)


class CustomTestingManager(TestingManager):
    def test_step(self, x_test: Any, y_test: Any) -> dict[str, float]:
        summary = super().test_step(x_test, y_test)
        summary["seen"] = float(len(y_test))
        return summary


def test_custom_testing_manager() -> None:
    model = PytorchModel()
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = CustomTestingManager(model, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics)
    x, y = make_data(12)
    result = manager.test(CustomDataset(x, y, batch_size=12))
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).float().mean().item()
    assert result["accuracy"] == pytest.approx(expected)
    assert result["seen"] == 12


class HandTrainingManager(BasicTrainingManager):
    """Implements one iteration itself, as the README's BasicTrainingManager example."""

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, float]:
        y = self.model(x_train)
        loss = F.mse_loss(y.squeeze(-1), y_train)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def test_step(self, x_test: Any, y_test: Any) -> dict[str, float]:
        return {"loss": F.mse_loss(self.model(x_test).squeeze(-1), y_test)}


class HandTestingManager(BasicTestingManager):
    def test_step(self, x_test: Any, y_test: Any) -> dict[str, float]:
        return {"mae": (self.model(x_test).squeeze(-1) - y_test).abs().mean()}


def test_basic_managers_run_user_steps() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = torch.nn.Linear(4, 1)
    manager = HandTrainingManager(model, torch.optim.SGD(model.parameters(), lr=0.05))
    before = manager.test(data)["loss"]
    manager.fit(data, epochs=20)
    after = manager.test(data)["loss"]
    with torch.no_grad():
        assert after == pytest.approx(F.mse_loss(model(x).squeeze(-1), y).item(), rel=1e-5)
    assert after < before / 10

    result = HandTestingManager(model).test(data)
    with torch.no_grad():
        assert result["mae"] == pytest.approx((model(x).squeeze(-1) - y).abs().mean().item(), rel=1e-5)
