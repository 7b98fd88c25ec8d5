"""What the FSDP2 test scripts and tests/test_fsdp.py share: the model, the data, the epoch order, the shares.

The epoch order is drawn as `DistributedSampler` draws it (a permutation from a generator seeded with
seed + epoch), and process r of W takes every W-th sample of it from a global position on, in batches:
so the samples of global step t are the block [t*B*W, (t+1)*B*W) of the order from that position,
whatever W is, and one process with batches of B*W takes the same blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

SAMPLES, FEATURES, CLASSES, WIDTH = 72, 6, 3, 9
GLOBAL_BATCH = 12  # samples per step over all processes (2 x 6, 3 x 4, 1 x 12)
SEED = 100


class Block(torch.nn.Module):
    """A residual unit: the class the sharding policy names."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


class Net(torch.nn.Module):
    """stem, two blocks, head: 9 rows per weight, shared 5 + 4 by two processes and 3 + 3 + 3 by three."""

    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(FEATURES, WIDTH)
        self.blocks = torch.nn.Sequential(Block(WIDTH), Block(WIDTH))
        self.norm: torch.nn.Module = torch.nn.BatchNorm1d(WIDTH) if norm else torch.nn.Identity()
        self.head = torch.nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(torch.tanh(self.stem(x)))))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return x, y


def epoch_order(epoch: int) -> torch.Tensor:
    return torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(SEED + epoch))


def share(epoch: int, position: int, world: int, rank: int) -> list[torch.Tensor]:
    """Process `rank`'s batches of `epoch` from the global sample `position` on (batches of GLOBAL_BATCH / world)."""
    batch = GLOBAL_BATCH // world
    mine = epoch_order(epoch)[position:][rank::world]
    return [mine[start : start + batch] for start in range(0, len(mine), batch)]


def train(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    window: int = 1,
    clip: Callable[[], torch.Tensor] | None = None,
    sync: Callable[[bool], object] | None = None,
) -> list[torch.Tensor]:
    """Train on `batches` (sample ids), an update every `window` batches; the clipped norms, one per update.

    `forward` maps inputs to logits; `sync(flag)` is the strategy's gradient-sync context for a backward.
    """
    x, y = data()
    batches = list(batches)
    norms = []
    for index, ids in enumerate(batches):
        update = (index + 1) % window == 0 or index == len(batches) - 1
        with sync(update) if sync is not None else contextlib.nullcontext():  # type: ignore[attr-defined]
            loss = F.cross_entropy(forward(x[ids]).float(), y[ids]) / window
            loss.backward()
        if update:
            if clip is not None:
                norms.append(clip().detach().clone())
            optimizer.step()
            optimizer.zero_grad()
    return norms
