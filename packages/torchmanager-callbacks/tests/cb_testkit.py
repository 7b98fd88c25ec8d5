"""Small models, data and a recording manager the callbacks' unit tests share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from torchmanager_core import Manager, checkpoint
from torchmanager_core.callbacks import CallbackList


def blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` 4-d points labelled by the sign of their first coordinate."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return x, (x[:, 0] > 0).long()


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def accuracy(y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return (y.argmax(-1) == label).float().mean()


def make_manager(seed: int = 0, lr: float = 0.1, **options: Any) -> Manager:
    """A linear classifier with SGD and an accuracy metric; `options` go to `Manager` (e.g. accumulation)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    return Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        loss_fn=torch.nn.CrossEntropyLoss(),
        metrics={"accuracy": accuracy},
        **options,
    )


class FakeManager:
    """A manager stand-in that records `save_checkpoint` calls and writes core's format."""

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        self.raw_model = torch.nn.Linear(2, 1)
        self.saved: list[str] = []
        self.stop_training = False
        self.callbacks = CallbackList(callbacks or [])

    def save_checkpoint(self, path: str) -> None:
        payload: dict[str, Any] = {"model": self.raw_model.state_dict(), "callbacks": {}}
        self.callbacks.on_save_checkpoint(payload)
        checkpoint.save(payload, path)
        self.saved.append(path)


class Untouchable(Mapping[str, Any]):
    """A batch summary that fails the test if anyone reads it (a read would sync with the device)."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"summary[{key!r}] was read")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the summary was iterated")

    def __len__(self) -> int:
        raise AssertionError("len(summary) was read")
