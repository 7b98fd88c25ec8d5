"""Positions mean one thing, and the run's state is defined once (issue 20, kinds 1, 2 and 6): members the loop owns.

References: an uninterrupted run of the same manager, and hand-written loops over the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from core_testkit import batches, blobs
from torch.utils.data import DataLoader, TensorDataset

from torchmanager_core import Callback, Manager, checkpoint


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.25), torch.nn.Linear(8, 3))


def sgd(model: torch.nn.Module, **kwargs: Any) -> Manager:
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.2), loss_fn=torch.nn.CrossEntropyLoss(), **kwargs)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# -- kind 2: a budget is batches in all, reached inside an epoch it stops there -------------------------------


def test_iterations_7_then_12_trains_12_batches_and_goes_on_inside_the_epoch() -> None:
    x, y = blobs(32)
    data = batches(x, y, 8)  # 4 batches an epoch
    torch.manual_seed(3)
    whole = sgd(mlp())
    whole.fit(data, iterations=12)

    torch.manual_seed(3)
    parts = sgd(mlp())
    parts.fit(data, iterations=7)
    assert (parts.current_epoch, parts.batch_index, parts.global_step, len(parts.history)) == (1, 3, 7, 1)
    parts.fit(data, iterations=12)
    assert (parts.current_epoch, parts.batch_index, parts.global_step) == (3, 0, 12)
    assert same(parts.raw_model, whole.raw_model)
    assert parts.history == whole.history  # epoch 2's values count its first 3 batches, trained by the first fit

    assert len(whole.history) == 3


def test_iterations_equal_a_hand_loop_of_that_many_batches() -> None:
    x, y = blobs(32)
    data = batches(x, y, 8)  # 4 batches an epoch
    model = torch.nn.Linear(4, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    manager = sgd(model)
    manager.fit(data, iterations=5)
    manager.fit(data, iterations=11)
    hand = torch.nn.Linear(4, 3)
    hand.load_state_dict(start)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.2)
    for i in range(11):
        xb, yb = data[i % 4]
        optimizer.zero_grad()
        F.cross_entropy(hand(xb), yb).backward()
        optimizer.step()
    for p, q in zip(hand.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert (manager.current_epoch, manager.batch_index, manager.global_step) == (2, 3, 11)


class TwoTargets(Manager):
    """An upstream-style subclass whose `_train` runs one pass a target each epoch (here: the same data twice)."""

    def _train(self, dataset: Any, /, iterations: int | None = None, *args: Any, **kwargs: Any) -> dict[str, float]:
        super()._train(dataset, iterations, *args, **kwargs)
        return super()._train(dataset, iterations, *args, **kwargs)


def test_a_train_that_runs_two_passes_an_epoch_trains_both() -> None:
    x, y = blobs(32)
    data = batches(x, y, 8)
    model = torch.nn.Linear(4, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    manager = TwoTargets(model, torch.optim.SGD(model.parameters(), lr=0.2), loss_fn=torch.nn.CrossEntropyLoss())
    manager.fit(data, epochs=2)
    assert manager.global_step == 16 and manager.current_epoch == 2
    hand = torch.nn.Linear(4, 3)
    hand.load_state_dict(start)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.2)
    for _ in range(2 * 2):
        for xb, yb in data:
            optimizer.zero_grad()
            F.cross_entropy(hand(xb), yb).backward()
            optimizer.step()
    for p, q in zip(hand.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


# -- kind 1: evaluating the data set that trains leaves its generator where training left it ------------------


def loader(seed: int) -> DataLoader[Any]:
    x, y = blobs(48)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("how", ["validation", "test-from-a-callback", "predict-from-a-callback"])
def test_evaluating_the_training_data_set_does_not_move_its_generator(how: str) -> None:
    torch.manual_seed(1)
    plain, plain_data = sgd(mlp()), loader(5)
    plain.fit(plain_data, epochs=3)

    class Evaluate(Callback):
        def __init__(self, data: DataLoader[Any]) -> None:
            self.data = data

        def on_epoch_end(self, epoch: int, summary: Any = None, val_summary: Any = None) -> None:
            if how == "test-from-a-callback":
                self.manager.test(self.data)
            elif how == "predict-from-a-callback":
                self.manager.predict(self.data)

    torch.manual_seed(1)
    data = loader(5)
    other = sgd(mlp())
    other.fit(data, epochs=3, val_dataset=data if how == "validation" else None, callbacks_list=[Evaluate(data)])
    assert same(other.raw_model, plain.raw_model)
    assert data.generator is not None and plain_data.generator is not None
    assert torch.equal(data.generator.get_state(), plain_data.generator.get_state())  # and the next epoch would too


# -- kind 6: a checkpoint asked for in a hook is written even when a later callback of that hook raises --------


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_requested_checkpoint_is_written_when_a_later_callback_raises(tmp_path: Path, error: type) -> None:
    path = tmp_path / "step.model"

    class Save(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if batch == 2:
                self.manager.save_checkpoint(path)

    class Fail(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if batch == 2:
                raise error("after the save was asked for")

    x, y = blobs(48)
    manager = sgd(mlp())
    with pytest.raises(error):
        manager.fit(batches(x, y, 8), epochs=2, callbacks_list=[Save(), Fail()])
    saved = checkpoint.load(path)
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (0, 3, 3)
    assert same_tensors(saved["model"], manager.raw_model.state_dict())


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
