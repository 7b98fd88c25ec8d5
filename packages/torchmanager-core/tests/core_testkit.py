"""Small models and data the core tests share; core's tests use plain torch losses and metrics only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def blobs(n: int, seed: int = 0, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` 4-d points whose class is a simple rule of the first two coordinates."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return x, ((x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()) % classes


def batches(x: torch.Tensor, y: Any, size: int) -> list[tuple[torch.Tensor, Any]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def linear(seed: int = 0, out: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, out)


class Accuracy(torch.nn.Module):
    """A minimal stateful metric through core's protocol (`reset()` and `result`), state in buffers."""

    correct: torch.Tensor
    seen: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("correct", torch.zeros(()))
        self.register_buffer("seen", torch.zeros(()))

    def reset(self) -> None:
        self.correct.zero_()
        self.seen.zero_()

    def forward(self, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        hits = (y.argmax(-1) == label).float()
        self.correct += hits.sum()
        self.seen += len(label)
        return hits.mean()

    @property
    def result(self) -> torch.Tensor:
        return self.correct / self.seen


def hand_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> tuple[float, float]:
    """One epoch of the loop a user writes by hand; sample-weighted loss and accuracy."""
    loss_sum = correct = seen = 0.0
    for x, y in data:
        out = model(x)
        loss = loss_fn(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (out.argmax(-1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen
