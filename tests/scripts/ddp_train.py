"""Launched by `tests/test_torchrun.py` under `torchrun --nproc_per_node=2`: three small trainings on the CPU.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_train.py OUT

Each rank writes `OUT/rank{RANK}.pt` (its final weights, the summaries it read, the sample ids of
every training batch it ran, how many checkpoint files it wrote and its pid); rank 0 also writes
`OUT/inputs.pt` (the data and initial weights, for the test's single-process reference). The
phases share one launch because each torchrun start costs seconds:

1. "dataset": a torchmanager `Dataset` (shuffled), validation, an `Experiment` under `OUT/experiments`, then `test`.
2. "loader": a plain `DataLoader(shuffle=True)` for 2 epochs.
3. "list": a list of batches for 1 epoch.
4. "accumulate": phase 1's data and initial weights, 2 epochs with `accumulate_grad_batches=4`.

Column 0 of every input is the sample's id; the model drops it, `train_step` records it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmanager
import torchmanager_core.checkpoint as core_checkpoint
from torchmanager.data import Dataset

BATCH = 8  # per rank: a step of the two ranks together sees 16 samples
EPOCHS = 3
SIZES = {"train": 96, "val": 32, "test": 40}  # train: divisible by 2 ranks (no padding); test: 5 batches, dealt 3 and 2


class DropId(torch.nn.Module):
    """Drops column 0 (the sample id) of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:]


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(DropId(), torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples `[id, 6 features]` with 3 classes that a small MLP can learn."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 6, generator=generator)
    labels = (features[:, 0] + features[:, 1] > 0).long() + (features[:, 2] > 0.5).long()
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    return torch.cat([ids, features], dim=1), labels


class RecordingManager(torchmanager.Manager):
    """The default manager that also keeps the ids of each training batch, per epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[int, list[list[int]]] = {}

    def train_step(self, x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, Any]:
        self.seen.setdefault(self.current_epoch, []).append([int(i) for i in x_train[:, 0]])
        return super().train_step(x_train, y_train)


class Summaries(torchmanager.callbacks.Callback):
    """Keeps the summaries each epoch ends with, as this rank read them."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_epoch_end(
        self, epoch: int, summary: Mapping[str, float] = {}, val_summary: Mapping[str, float] | None = None
    ) -> None:
        self.epochs.append({"train": dict(summary), "val": dict(val_summary or {})})


def new_manager(model: torch.nn.Module, **kwargs: Any) -> RecordingManager:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    return RecordingManager(model, optimizer, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics, **kwargs)


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    saves: list[str] = []
    original_save = core_checkpoint.save

    def counting_save(payload: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        saves.append(os.fspath(path))
        original_save(payload, path, *args, **kwargs)

    core_checkpoint.save = counting_save  # every checkpoint file any callback writes goes through it

    torch.manual_seed(0)
    model = make_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = {name: make_data(n, seed) for seed, (name, n) in enumerate(SIZES.items())}
    if rank == 0:
        torch.save({"data": data, "initial": initial}, out / "inputs.pt")

    # 1. a torchmanager Dataset, with validation, an Experiment and a test
    manager = new_manager(model)
    summaries = Summaries()
    experiment = torchmanager.callbacks.Experiment(
        "run", manager, monitors=["accuracy"], root=os.fspath(out / "experiments")
    )
    model, fit_summary = manager.fit(
        Dataset.from_tensor_slices(data["train"], BATCH, shuffle=True),
        epochs=EPOCHS,
        val_dataset=Dataset.from_tensor_slices(data["val"], BATCH),
        callbacks_list=[summaries, experiment],
        return_summary=True,
    )
    test_summary = manager.test(Dataset.from_tensor_slices(data["test"], BATCH))
    result: dict[str, Any] = {
        "pid": os.getpid(),
        "epochs": {"dataset": summaries.epochs},
        "fit": fit_summary,
        "test": test_summary,
        "states": {"dataset": {k: v.clone() for k, v in model.state_dict().items()}},
        "seen": {"dataset": manager.seen},
    }

    # 2. a plain DataLoader that shuffles
    x, y = data["train"][0][:24], data["train"][1][:24]
    manager = new_manager(make_model())
    model = manager.fit(DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True), epochs=2)
    result["states"]["loader"] = dict(model.state_dict())
    result["seen"]["loader"] = manager.seen

    # 3. a list of batches
    manager = new_manager(make_model())
    model = manager.fit([(x[i : i + 4], y[i : i + 4]) for i in range(0, 24, 4)], epochs=1)
    result["states"]["list"] = dict(model.state_dict())
    result["seen"]["list"] = manager.seen

    # 4. gradient accumulation: 6 steps a rank and epoch make windows of 4 and 2 (DDP syncs once a window)
    model = make_model()
    model.load_state_dict(initial)
    manager, summaries = new_manager(model, accumulate_grad_batches=4), Summaries()
    model = manager.fit(
        Dataset.from_tensor_slices(data["train"], BATCH, shuffle=True), epochs=2, callbacks_list=[summaries]
    )
    result["states"]["accumulate"] = dict(model.state_dict())
    result["seen"]["accumulate"] = manager.seen
    result["epochs"]["accumulate"] = summaries.epochs

    result["saves"] = saves
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
