"""Checkpoint files written by upstream torchmanager 1.5 load here with `trusted=True`.

The files in tests/data were written by upstream 1.5 itself (scripts/upstream15_checkpoint.py), with
what upstream loads back from them (`upstream15_reference.pt`): the reference is upstream's own reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import torchmanager
from tests.workspace import ROOT
from torchmanager_core.checkpoint import CheckpointError, load

DATA = ROOT / "tests" / "data"
REFERENCE: dict[str, dict[str, Any]] = torch.load(DATA / "upstream15_reference.pt", weights_only=True)
FILES = {name: DATA / f"upstream15_{name}.model" for name in ("manager", "model", "weights", "subclass")}


@pytest.fixture(autouse=True)
def project_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`upstream15_subclass.model` pickles a manager subclass of tests/data/upstream15_subclass.py, a project's module."""
    monkeypatch.syspath_prepend(str(DATA))


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The architecture and optimizer class the files were written with."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return model, torch.optim.Adam(model.parameters(), lr=0.5)


def assert_same(got: Any, expected: Any, where: str = "state") -> None:
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got, expected), where
    elif isinstance(expected, Mapping):
        assert isinstance(got, Mapping) and set(got) == set(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


def assert_restored(manager: torchmanager.Manager, name: str) -> None:
    reference = REFERENCE[name]
    assert_same(manager.raw_model.state_dict(), reference["model"], "model")
    assert manager.optimizer is not None
    assert_same(manager.optimizer.state_dict(), reference["optimizer"], "optimizer")
    # upstream keeps the index of the last finished epoch and resumes at the next one; ours counts epochs done
    assert manager.current_epoch == reference["epoch"] + 1 == (3 if name == "subclass" else 2)


@pytest.mark.parametrize("name", ["manager", "model", "subclass"])
def test_from_checkpoint_rebuilds_model_and_optimizer_of_an_upstream_file(name: str) -> None:
    manager = torchmanager.Manager.from_checkpoint(FILES[name], trusted=True)
    assert isinstance(manager.raw_model, torch.nn.Sequential) and isinstance(manager.optimizer, torch.optim.Adam)
    assert_restored(manager, name)


@pytest.mark.parametrize("name", ["manager", "model", "weights", "subclass"])
def test_load_checkpoint_restores_an_upstream_file_into_a_manager(name: str) -> None:
    from upstream15_subclass import StepsManager

    model, optimizer = build()
    if name == "subclass":  # the project's own class, as its resume code builds it
        manager: torchmanager.Manager = StepsManager(model, 10, optimizer, torchmanager.losses.MSE())
    else:
        manager = torchmanager.Manager(model, optimizer, loss_fn=torchmanager.losses.MSE())
    payload = manager.load_checkpoint(FILES[name], trusted=True)
    assert_restored(manager, name)
    assert payload["converted_from"] == "torchmanager 1.5"


def test_a_weights_only_upstream_file_needs_the_model() -> None:
    """It holds a state dict, not the model's structure: the error says to pass `model=`."""
    with pytest.raises(
        CheckpointError,
        match=r"does not hold the model's structure \(weights only\), so the model cannot be rebuilt from it: pass `model=`",
    ):
        torchmanager.Manager.from_checkpoint(FILES["weights"], trusted=True)
    model, _ = build()
    manager = torchmanager.Manager.from_checkpoint(FILES["weights"], model=model, trusted=True)
    assert_restored(manager, "weights")


@pytest.mark.parametrize("name", ["manager", "model", "weights", "subclass"])
def test_an_upstream_file_is_refused_without_trusted(name: str) -> None:
    with pytest.raises(CheckpointError, match=r"contains Python objects.*Pass `trusted=True`"):
        load(FILES[name])


def test_training_resumes_from_an_upstream_file_at_the_next_epoch() -> None:
    manager = torchmanager.Manager.from_checkpoint(FILES["manager"], trusted=True, loss_fn=torchmanager.losses.MSE())
    seen: list[int] = []
    log = torchmanager.callbacks.LambdaCallback(pre_fn=seen.append)  # called with each epoch index as it starts
    torch.manual_seed(0)
    data = [(torch.randn(8, 4), torch.randn(8, 3)) for _ in range(2)]
    manager.fit(data, epochs=4, callbacks_list=[log])
    assert seen == [2, 3]


def test_an_upstream_layout_without_a_model_is_refused_and_other_dicts_pass_through(tmp_path: Path) -> None:
    torch.save({"model": 5, "last_epoch": 0, "save_weights_only": False, "optimizer": None}, tmp_path / "odd.model")
    with pytest.raises(
        CheckpointError, match=r"upstream torchmanager checkpoint that cannot be read.*Received: model=int"
    ):
        load(tmp_path / "odd.model", trusted=True)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    assert set(load(tmp_path / "other.pt", trusted=True)) == {"weights"}


def test_fit_on_an_upstream_manager_restored_without_its_loss_says_where_the_loss_goes() -> None:
    """1.5 pickled the loss with the manager; ours is not carried over, so `fit` must say to pass it back."""
    manager = torchmanager.Manager.from_checkpoint(FILES["manager"], trusted=True)
    data = [(torch.randn(8, 4), torch.randn(8, 3))]
    with pytest.raises(
        ValueError,
        match=r"`fit` needs a `loss_fn` for the default training step: pass one to the manager "
        r"\(`Manager\.from_checkpoint\(path, \.\.\., loss_fn=\.\.\.\)` for a restored one: a checkpoint keeps no loss "
        r"function\), or override `train_step`\. Received: loss_fn=None$",
    ):
        manager.fit(data, epochs=3)
    restored = torchmanager.Manager.from_checkpoint(FILES["manager"], trusted=True, loss_fn=torchmanager.losses.MSE())
    restored.fit(data, epochs=3)  # the way the message names trains on from epoch 2
    assert restored.current_epoch == 3
