"""The work both sides do: the workloads, their batches, the hand-written loop and the `Manager.fit` call.

Who owns what: this module says what one training run is (the same model, batches, optimizer,
loss and accuracy on both sides); `bench_rows` decides which runs a row compares, and
`bench_timing` how they are timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import torchmanager

__all__ = ["WORKLOADS", "Batches", "CopiedStep", "Workload", "make_batches", "ours_fit", "raw_fit", "seeded_start"]

Batches = list[tuple[torch.Tensor, torch.Tensor]]
CallbackFactory = Callable[[torchmanager.Manager], Sequence[torchmanager.callbacks.Callback]]
Measure = Callable[[], AbstractContextManager[object]]
BATCH_SIZE = 128
LEARNING_RATE = 0.01


@dataclass(frozen=True)
class Workload:
    """A model to train, the shape of one input sample, the batch size, and whether ours runs a copied step."""

    name: str
    make_model: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    batch_size: int = BATCH_SIZE
    copied_step: bool = False
    """Ours trains with `CopiedStep`, whose `train_step` is a copy of the default one (a custom step)."""


def _mlp(hidden: int = 256) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
    )


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 8 * 8, 10),
    )


WORKLOADS = {
    "A": Workload("A: MLP 64-256-10", _mlp, (64,)),
    "B": Workload("B: CNN 1-32-64", _cnn, (1, 8, 8)),
    "S": Workload("S: MLP 64-64-10, batch 32", lambda: _mlp(64), (64,), 32),
    "P": Workload("P: S, train_step copied from the default", lambda: _mlp(64), (64,), 32, copied_step=True),
}
"""A is dominated by per-step overhead, B by compute; S is the smallest step (issue 15's instruction counts); P is
S through a subclass whose `train_step` is a copy of the default one (a custom step: the loop runs it as it is)."""


class CopiedStep(torchmanager.Manager):  # type: ignore[type-arg]
    """A manager whose `train_step` is the default one copied, as a user starts writing their own."""

    def train_step(self, x_train: Any, y_train: Any) -> dict[str, Any]:
        y, loss = self.forward(x_train, y_train)
        assert loss is not None
        self.backward(loss)
        self.optimize()
        summary: dict[str, Any] = {"loss": loss.detach()}
        summary.update(self.eval(y.detach(), y_train, training=True))
        return summary


def make_batches(shape: tuple[int, ...], steps: int, batch_size: int = BATCH_SIZE) -> Batches:
    """`steps` random `(x, y)` batches of 10 classes, the same on every call."""
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, *shape, generator=gen), torch.randint(0, 10, (batch_size,), generator=gen))
        for _ in range(steps)
    ]


def seeded_start(workload: Workload, steps: int) -> tuple[torch.nn.Module, Batches]:
    """The initial model (seeded: the same weights on every call) and `steps` batches of `workload`."""
    torch.manual_seed(0)
    return workload.make_model(), make_batches(workload.input_shape, steps, workload.batch_size)


def raw_fit(
    model: torch.nn.Module,
    batches: Batches,
    epochs: int,
    *,
    autocast: torch.dtype | None = None,
    ddp: bool = False,
    measure: Measure = nullcontext,
) -> list[tuple[float, float]]:
    """The loop a user would write by hand, with the same summary work as ours.

    Args:
        model: The model to train (modified in place).
        batches: The batches of one epoch.
        epochs: How many epochs.
        autocast: Run forward and loss under `torch.autocast("cpu", dtype=autocast)`.
        ddp: Wrap the model in `DistributedDataParallel` (needs a process group).
        measure: Entered around the epochs (not the optimizer's creation), as `ours_fit` does
            around `fit`: e.g. to count their instructions.
    Returns:
        Each epoch's mean loss and accuracy, read once per epoch.
    """
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    history = []
    with measure():
        model.train()
        for _ in range(epochs):
            loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
            for x, y in batches:
                if autocast is None:
                    out = model(x)
                    loss = F.cross_entropy(out, y)
                else:
                    with torch.autocast("cpu", dtype=autocast):
                        out = model(x)
                        loss = F.cross_entropy(out, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(-1) == y).sum()
                seen += len(y)
            history.append((loss_sum.item() / seen, correct.item() / seen))
    return history


def ours_fit(
    model: torch.nn.Module,
    batches: Batches,
    epochs: int,
    *,
    precision: str = "32",
    callbacks: CallbackFactory | None = None,
    measure: Measure = nullcontext,
    copied_step: bool = False,
) -> torchmanager.Manager:
    """The same training through `Manager.fit`; returns the manager (for checks after the run).

    Args:
        model: The model to train (modified in place).
        batches: The batches of one epoch.
        epochs: How many epochs.
        precision: The manager's `precision`.
        callbacks: Makes the callbacks to attach, given the manager.
        measure: Entered around `fit` (not the manager's construction): e.g. to count its instructions.
        copied_step: Train with `CopiedStep` (a `train_step` copied from the default one).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = (CopiedStep if copied_step else torchmanager.Manager)(
        model, optimizer, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics, precision=precision
    )
    callbacks_list = list(callbacks(manager)) if callbacks is not None else None
    with measure():
        manager.fit(
            batches, epochs=epochs, callbacks_list=callbacks_list, show_verbose=False, device=torch.device("cpu")
        )
    for callback in callbacks_list or []:
        close = getattr(callback, "close", None)
        if callable(close):
            close()  # TensorBoard: end its writer thread, as a finished script would
    return manager
