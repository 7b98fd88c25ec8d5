"""A small GAN trained by a `Manager` with two models and two optimizers, for tests/test_two_models.py.

Usage: python gan_train.py OUT            (one process)
       torchrun --nproc_per_node=2 gan_train.py OUT

Each process writes `OUT/rank{R}.pt`: the uninterrupted run's final generator and discriminator weights
and both optimizers' states, the global step, the epochs' summaries; then the weights of a second,
fresh manager that resumed from the checkpoint the first saved after batch 3 of epoch 1 (mid-epoch).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import torchmanager
from torchmanager_core import Callback

EPOCHS, STEPS, BATCH = 3, 6, 8


class GAN(torchmanager.Manager):
    """One discriminator update, then one generator update, each batch (the models and optimizers by name)."""

    def train_step(self, x_train: torch.Tensor, y_train: Any) -> dict[str, Any]:
        gen, disc = self.model["gen"], self.model["disc"]
        opt_gen, opt_disc = self.optimizer["gen"], self.optimizer["disc"]
        fake = gen(torch.randn(len(x_train), 2))
        logits = disc(torch.cat([x_train, fake.detach()]))  # one forward of the discriminator a step: DDP's way
        real = torch.cat([torch.ones(len(x_train), 1), torch.zeros(len(x_train), 1)])
        d_loss = F.binary_cross_entropy_with_logits(logits, real)
        opt_disc.zero_grad()
        self.backward(d_loss)
        opt_disc.step()
        g_loss = F.binary_cross_entropy_with_logits(disc(fake), torch.ones(len(x_train), 1))
        opt_gen.zero_grad()
        self.backward(g_loss)
        opt_gen.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


def models() -> torch.nn.ModuleDict:
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    disc = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1))
    return torch.nn.ModuleDict({"gen": gen, "disc": disc})


def manager_of(model: torch.nn.ModuleDict) -> GAN:
    optimizers = {
        "gen": torch.optim.Adam(model["gen"].parameters(), lr=2e-3, betas=(0.5, 0.9)),
        "disc": torch.optim.SGD(model["disc"].parameters(), lr=5e-2, momentum=0.5),
    }
    return GAN(model, optimizers)


def data(world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real samples around (2, -1); every process trains STEPS batches of BATCH an epoch (its share of them)."""
    generator = torch.Generator().manual_seed(1)
    n = STEPS * BATCH * world
    x = torch.randn(n, 2, generator=generator) * 0.5 + torch.tensor([2.0, -1.0])
    return [(x[i : i + BATCH], torch.zeros(BATCH)) for i in range(0, n, BATCH)]


class SaveAt(Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.current_epoch == 1 and batch == 2:
            self.manager.save_checkpoint(self.path)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    world, rank = int(__import__("os").environ.get("WORLD_SIZE", "1")), torchmanager.distributed.get_rank()
    rank = int(__import__("os").environ.get("RANK", "0"))
    batches = data(world)
    torch.manual_seed(100 + rank)  # each process draws its own noise
    model = models()
    manager = manager_of(model)
    checkpoint = out / "mid.model"
    manager.fit(batches, epochs=EPOCHS, callbacks_list=[SaveAt(checkpoint)], show_verbose=False)
    result: dict[str, Any] = {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": manager.optimizer.state_dict(),
        "global_step": manager.global_step,
        "history": list(manager.history),
    }
    torch.manual_seed(999)  # another start: its random draws come from the checkpoint
    resumed_model = models()
    resumed = manager_of(resumed_model)
    resumed.fit(batches, epochs=EPOCHS, resume_from=checkpoint, show_verbose=False)
    result["resumed"] = {k: v.clone() for k, v in resumed_model.state_dict().items()}
    result["resumed_history"] = list(resumed.history)
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
