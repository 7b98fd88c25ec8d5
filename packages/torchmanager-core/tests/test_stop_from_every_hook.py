"""`StopTraining` from every hook ends the run where the hook table says, and nothing is trained twice or skipped.

The run: 3 epochs of 3 shuffled batches (a loader with its own generator) through a model with
dropout, validated after each epoch. A callback raises `StopTraining` once, in epoch index 1 (at
batch 1 for the batch hooks). Each case is checked against values worked out by hand from the hook
table (the position, the history, the optimizer updates), then continued two ways, by a later `fit`
of the same manager and by a new process's manager resuming from a checkpoint saved after the
stop: both must end bit-identical to the uninterrupted run, each epoch having trained every sample
exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchmanager_core import Callback, Manager, StopTraining

EPOCHS, BATCHES, BATCH_SIZE = 3, 3, 4


class Recording(torch.nn.Module):
    """A dropout MLP that records the ids (column 0) of the samples each training forward sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.seen.extend(int(i) for i in x[:, 0])
        return self.body(x)


def data() -> tuple[DataLoader[Any], list[tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(1)
    n = BATCHES * BATCH_SIZE
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, 3, generator=gen)], 1)
    y = torch.randint(0, 3, (n,), generator=gen)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(2)
    )
    return loader, [(x[:6], y[:6]), (x[6:], y[6:])]


def make() -> tuple[Manager, Recording]:
    model = Recording()
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss()), model


def stopper(hook: str) -> Callback:
    """A callback class overriding only `hook` (the loop calls a hook only on the classes overriding it)."""

    def condition(*args: Any, **kwargs: Any) -> bool:
        manager = holder.manager
        if hook == "on_train_start":
            return True
        epoch = manager.current_epoch if hook.startswith("on_batch") else args[0]
        batch_ok = args[0] == 1 if hook.startswith("on_batch") else True
        return epoch == 1 and batch_ok

    def method(self: Callback, *args: Any, **kwargs: Any) -> None:
        if not holder.done and condition(*args, **kwargs):
            holder.done = True
            raise StopTraining(f"stopped in {hook}")

    cls = type(f"Stop_{hook}", (Callback,), {hook: method})
    holder: Any = cls()
    holder.done = False
    return holder  # type: ignore[no-any-return]


# (hook, (current_epoch, batch_index, global_step, epochs in history) right after the stopped fit), worked out by hand
CASES = [
    ("on_train_start", (0, 0, 0, 0)),  # nothing trained
    ("on_epoch_start", (1, 0, 3, 1)),  # epoch 0 done; epoch 1 not started
    ("on_batch_start", (1, 2, 5, 1)),  # batch 1 of epoch 1 still trains ("after the current batch")
    ("on_batch_end", (1, 2, 5, 1)),
    ("on_validation_start", (2, 0, 6, 2)),  # epoch 1 trained, validated and ended ("after the current epoch")
    ("on_validation_end", (2, 0, 6, 2)),
    ("on_epoch_end", (2, 0, 6, 2)),
]


def per_epoch(seen: list[int]) -> list[list[int]]:
    n = BATCHES * BATCH_SIZE
    return [sorted(seen[i : i + n]) for i in range(0, len(seen), n)]


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], list[dict[str, float]], list[int]]:
    torch.manual_seed(7)
    manager, model = make()
    loader, val = data()
    manager.fit(loader, epochs=EPOCHS, val_dataset=val)
    assert manager.global_step == EPOCHS * BATCHES
    return {k: v.clone() for k, v in model.state_dict().items()}, list(manager.history), model.seen


@pytest.mark.parametrize(("hook", "expected"), CASES, ids=[hook for hook, _ in CASES])
def test_stop_from_each_hook(hook: str, expected: tuple[int, int, int, int], reference: Any, tmp_path: Path) -> None:
    weights, history, seen = reference
    torch.manual_seed(7)
    manager, model = make()
    loader, val = data()
    manager.fit(loader, epochs=EPOCHS, val_dataset=val, callbacks_list=[stopper(hook)])
    position = (manager.current_epoch, manager.batch_index, manager.global_step, len(manager.history))
    assert position == expected
    assert manager.history == history[: expected[3]]
    path = tmp_path / "stopped.model"
    manager.save_checkpoint(path)

    # a later fit of the same manager goes on from there
    manager.fit(loader, epochs=EPOCHS, val_dataset=val)
    assert manager.global_step == EPOCHS * BATCHES
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert manager.history == history
    assert model.seen == seen  # the same samples in the same order: nothing twice, nothing skipped
    assert all(epoch == list(range(BATCHES * BATCH_SIZE)) for epoch in per_epoch(model.seen))

    # so does a new manager resuming from the checkpoint saved after the stop
    torch.manual_seed(123)  # another process's random state
    resumed, resumed_model = make()
    loader, val = data()
    resumed.fit(loader, epochs=EPOCHS, val_dataset=val, resume_from=path)
    for name, tensor in resumed_model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert resumed.history == history and resumed.global_step == EPOCHS * BATCHES
    done = expected[0] * BATCHES * BATCH_SIZE + expected[1] * BATCH_SIZE
    assert resumed_model.seen == seen[done:]
