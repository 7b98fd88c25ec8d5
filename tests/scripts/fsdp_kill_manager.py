"""Launched by `tests/test_fsdp_manager.py` under torchrun (2 CPU processes): FSDP2 killed mid-epoch, then run again.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 fsdp_kill_manager.py OUT (none|kill|term)

The same command each time: a model with dropout, per-process random streams, `FSDP2Strategy(units=Block)`,
Adam from a factory, 2 epochs of 6 updates, an `Experiment` (its `last.model` a sharded checkpoint every
2 updates, resumed by `resume="auto"` when the run was stopped). `kill`: process 1 kills itself (SIGKILL)
after update 5, before that update's checkpoint; `term`: every process is sent SIGTERM after update 5 (a
preemption: the run saves there and exits with 143). Run again, the command goes on from the last checkpoint.
The end: whole weights `OUT/{mode}_final.pt` (`none`: never interrupted); each run that ends (a SIGTERM'ed one
too) appends the update it started at and the batches it trained to `OUT/{mode}_runs.txt`.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from fsdp_common import Block, Net, data
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from torchmanager import Manager
from torchmanager.callbacks import Callback, Experiment, LastCheckpoint
from torchmanager_core import distributed
from torchmanager_core.checkpoint.sharded import save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy

KILL_AT = 5


class DropNet(Net):
    """`Net` with dropout before its head: training draws from each process's random stream."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.blocks(torch.tanh(self.stem(x)))))


class Count(Callback):
    """Appends `<update it started at> <batches it trained>` to `path` when the run ends (process 0)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self.start, self.batches = path, 0, 0

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self.start = self.manager.global_step

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        self.batches += 1

    def on_train_end(self, model: torch.nn.Module) -> None:
        if dist.get_rank() == 0:
            with open(self.path, "a") as file:
                file.write(f"{self.start} {self.batches}\n")


class Kill(Callback):
    """Ends the process the way `mode` says after update `KILL_AT` (only in a run that did not resume)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.global_step != KILL_AT:
            return
        if self.mode == "kill" and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "term":
            os.kill(os.getpid(), signal.SIGTERM)  # every process, as a scheduler sends it


def run(out: Path, mode: str) -> None:
    torch.manual_seed(0)
    model = DropNet()
    torch.manual_seed(70 + dist.get_rank())  # each process its own dropout stream
    x, y = data()
    dataset = TensorDataset(x, y)
    train = DataLoader(dataset, batch_size=6, sampler=DistributedSampler(dataset, seed=0))
    manager = Manager(
        model,
        lambda params: torch.optim.Adam(params, lr=0.01),
        torch.nn.CrossEntropyLoss(),
        strategy=FSDP2Strategy(units=(Block,)),
    )
    experiment = Experiment(mode, manager, root=str(out / "experiments"))
    last = LastCheckpoint(manager, experiment.last_ckpt_path, save_every_n_steps=2)
    callbacks: list[Callback] = [experiment, last, Count(out / f"{mode}_runs.txt")]
    if not experiment.resumed:
        callbacks.append(Kill(mode))
    manager.fit(train, epochs=2, callbacks_list=callbacks, show_verbose=False)
    save_full_state_dict(manager.model, out / f"{mode}_final.pt")


if __name__ == "__main__":
    distributed.init_from_environment()
    run(Path(sys.argv[1]), sys.argv[2])
