"""Launched by `tests/test_exact_evaluation.py` under torchrun (2 or 3 CPU processes): evaluation of uneven data.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=N ddp_exact.py OUT

Each rank writes `OUT/rank{RANK}.pt`: the summaries `test()` returned and the outputs `predict`
returned for every evaluation case (a manager, a data set size and batch size, a kind of data
source), the `test()` summaries of losses that ignore some labels, the validation summaries of a few `fit` runs with the weights each epoch ended with, what
an empty data set raised, and the weights after training on a list of batches that does not
divide by the number of processes. Rank 0 also writes `OUT/inputs.pt` (the weights and the data),
for the test's single-process references. All cases share one launch: each torchrun start costs
seconds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torchmanager
from torchmanager.data import Dataset

SIZES = ((5, 2), (5, 4), (5, 8), (11, 3))
"""(samples, batch size): the issue's input; 2 batches (one rank in 3 has none); 1 batch; 4 batches."""

SOURCES = ("dataset", "dataset_shuffled", "loader", "loader_shuffled", "loader_unseeded", "list", "user_sampler")
"""The kinds of evaluation data: a torchmanager Dataset (shuffled by a seeded generator or not), a DataLoader
(likewise, or shuffled from each rank's own global generator), a list of batches, and a DataLoader with the
`DistributedSampler` a DDP user gives it."""

MANAGERS = ("stateful", "custom")
VALIDATION = (("dataset", 5, 2), ("loader_shuffled", 5, 2), ("list", 5, 2), ("list", 5, 8))
TRAIN_SIZE, LR, EPOCHS = 8, 0.5, 2


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def eval_data(n: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(n, 100 * n + batch)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


class TensorSet(Dataset):
    """A torchmanager `Dataset` over `(x, y)` tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, **options: Any) -> None:
        super().__init__(batch, num_workers=0, **options)
        self.x, self.y = x, y

    @property
    def unbatched_len(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def make_source(kind: str, x: torch.Tensor, y: torch.Tensor, batch: int) -> Any:
    """A data source of `kind` over `(x, y)`; the same in every process, so a single process can rebuild it."""
    pairs = TensorDataset(x, y)
    if kind == "dataset":
        return TensorSet(x, y, batch)
    if kind == "dataset_shuffled":
        return TensorSet(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(7))
    if kind == "loader":
        return DataLoader(pairs, batch_size=batch)
    if kind == "loader_shuffled":
        return DataLoader(pairs, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(7))
    if kind == "loader_unseeded":
        return DataLoader(pairs, batch_size=batch, shuffle=True)
    if kind == "list":
        return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    if kind == "user_sampler":  # under torchrun: this rank's padded share, which evaluation must see past
        return DataLoader(pairs, batch_size=batch, sampler=DistributedSampler(pairs, shuffle=False))
    raise ValueError(kind)


def confidence(y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """A plain metric function (no state of its own): the mean top probability."""
    return y.softmax(1).amax(1).mean()


class CustomStep(torchmanager.Manager):
    """A manager whose own `test_step` returns the loss of a plain torch loss and an extra value."""

    def test_step(self, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, Any]:
        y, loss = self.forward(x_test, y_test)
        assert loss is not None
        top2 = y.topk(2, dim=1).values
        return {"loss": loss, "margin": (top2[:, 0] - top2[:, 1]).mean(), **self.eval(y, y_test)}


def new_manager(kind: str, model: torch.nn.Module, **more_metrics: Any) -> torchmanager.Manager:
    """ "stateful": our loss and metrics (a mean, a confusion matrix) and a plain metric function; "custom": its
    own `test_step` with a plain torch loss and an extra value."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    metrics: dict[str, Any] = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy(), **more_metrics}
    if kind == "stateful":
        metrics.update(f1=torchmanager.metrics.F1(average="macro", num_classes=3), confidence=confidence)
        return torchmanager.Manager(model, optimizer, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics)
    return CustomStep(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), metrics=metrics)


IGNORING = ("dict", "multi")
CLASS_WEIGHTS = torch.tensor([0.5, 2.0, 1.0])
IGNORED = -100


def with_ignored(y: torch.Tensor) -> torch.Tensor:
    """The labels with every third one (0, 3, ...) set to `IGNORED`."""
    y = y.clone()
    y[::3] = IGNORED
    return y


def ignoring_loss(kind: str) -> Any:
    """Class-weighted cross entropy and focal loss, both ignoring `IGNORED`: as a dict, or as one `MultiLosses`."""
    parts = {
        "ce": torchmanager.losses.CrossEntropy(CLASS_WEIGHTS, ignore_index=IGNORED),
        "focal": torchmanager.losses.FocalCrossEntropy(gamma=2, ignore_index=IGNORED),
    }
    return parts if kind == "dict" else torchmanager.losses.MultiLosses(parts.values())


def keep_epoch_ends(model: torch.nn.Module, epochs: list[dict[str, Any]]) -> Any:
    """A callback keeping each epoch's validation summary and the weights the epoch ended with."""

    @torchmanager.callbacks.on_epoch_end
    def keep(epoch: int, summary: Mapping[str, float]) -> None:
        validation = {name.removeprefix("val_"): value for name, value in summary.items() if name.startswith("val_")}
        epochs.append({"val": validation, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}})

    return keep


def failure(action: Any) -> str:
    try:
        action()
    except ValueError as error:
        return str(error)
    return "no error"


class Recording(torchmanager.Manager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[torch.Tensor] = []

    def train_step(self, x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, Any]:
        self.seen.append(x_train.clone())
        return super().train_step(x_train, y_train)


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    model = make_model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    train = make_data(TRAIN_SIZE, 1)
    if rank == 0:
        data = {size: eval_data(*size) for size in SIZES}
        torch.save({"weights": weights, "train": train, "eval": data}, out / "inputs.pt")
    result: dict[str, Any] = {"test": {}, "predict": {}, "validation": {}, "ignoring": {}}

    for kind in MANAGERS:
        manager = new_manager(kind, model)
        for n, batch in SIZES:
            x, y = eval_data(n, batch)
            for source in SOURCES:
                torch.manual_seed(1000 + rank)  # the ranks' global generators differ: "loader_unseeded" draws apart
                result["test"][kind, n, batch, source] = manager.test(make_source(source, x, y, batch))
                torch.manual_seed(2000 + rank)
                result["predict"][kind, n, batch, source] = manager.predict(make_source(source, x, y, batch))

    for source, n, batch in VALIDATION:
        model.load_state_dict(weights)
        epochs: list[dict[str, Any]] = []
        x, y = eval_data(n, batch)
        new_manager("stateful", model).fit(
            make_source("loader", *train, 2),
            epochs=EPOCHS,
            val_dataset=make_source(source, x, y, batch),
            callbacks_list=[keep_epoch_ends(model, epochs)],
        )
        result["validation"][source, n, batch] = epochs

    model.load_state_dict(weights)
    for kind in IGNORING:  # losses whose mean divides by the labels not ignored, each weighted by its class
        manager = torchmanager.Manager(model, loss_fn=ignoring_loss(kind))
        for n, batch in SIZES:
            x, y = eval_data(n, batch)
            for source in ("list", "dataset_shuffled"):
                result["ignoring"][kind, n, batch, source] = manager.test(
                    make_source(source, x, with_ignored(y), batch)
                )

    manager = new_manager("stateful", model)
    result["empty"] = {
        "test": failure(lambda: manager.test([])),
        "predict": failure(lambda: manager.predict([])),
    }

    model.load_state_dict(weights)  # training on 5 batches: every rank steps as often (the first batches again)
    x, y = train[0][:5], train[1][:5]
    recording = Recording(model, torch.optim.SGD(model.parameters(), lr=LR), loss_fn=torch.nn.CrossEntropyLoss())
    recording.fit([(x[i : i + 1], y[i : i + 1]) for i in range(5)], epochs=1)
    result["uneven_list"] = {"weights": dict(model.state_dict()), "seen": recording.seen}
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
