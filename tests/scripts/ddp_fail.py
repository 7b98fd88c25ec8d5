"""Launched by `tests/test_torchrun.py` under `torchrun --nproc_per_node=2`: rank 1 fails in epoch 2.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_fail.py OUT raise|hang|stop|stop-flag|stop-raise

When epoch 2 starts, a callback on rank 1 raises ("raise") or blocks for 10 minutes ("hang", a
stuck rank), while rank 0 goes on into the epoch's first gradient all-reduce. Either way the
launch must end with an error rather than hang: with "hang", after `TORCHMANAGER_DIST_TIMEOUT`.
With "stop", rank 1 alone raises `StopTraining` when epoch 1 ends: both ranks must stop there,
cleanly. With "stop-flag", rank 0 alone sets `manager.stop_training` after batch 1 of epoch 2; with
"stop-raise", rank 1 alone raises `StopTraining` after batch 2 of epoch 2: every rank must stop
after that same batch, cleanly. A rank writes `OUT/rank{RANK}-finished` (with its epoch count, or
with "stop-*" its global step) and, then, `OUT/rank{RANK}.pt` (its weights) only if its `fit` returned.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

import torchmanager

MESSAGE = "rank 1 failed on purpose when epoch 2 started"


class FailOnRank1(torchmanager.callbacks.Callback):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def on_epoch_end(self, epoch: int, summary: object = None, val_summary: object = None) -> None:
        if self.mode == "stop" and epoch == 0 and torchmanager.distributed.get_rank() == 1:
            raise torchmanager.errors.StopTraining(epoch)

    def on_batch_end(self, batch: int, summary: object = None) -> None:
        rank, epoch = torchmanager.distributed.get_rank(), self.manager.current_epoch
        if self.mode == "stop-flag" and rank == 0 and epoch == 1 and batch == 1:
            self.manager.stop_training = True
        if self.mode == "stop-raise" and rank == 1 and epoch == 1 and batch == 2:
            raise torchmanager.errors.StopTraining(epoch, "rank 1 stops mid-epoch")

    def on_epoch_start(self, epoch: int) -> None:
        if self.mode in ("raise", "hang") and epoch == 1 and torchmanager.distributed.get_rank() == 1:
            if self.mode == "hang":
                time.sleep(600)
            raise RuntimeError(MESSAGE)


def main(out: Path, mode: str) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = torch.nn.Linear(4, 2)
    manager = torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    manager.fit(batches, epochs=3, callbacks_list=[FailOnRank1(mode)])
    rank = os.environ["RANK"]
    (out / f"rank{rank}-finished").write_text(str(manager.global_step if "-" in mode else manager.current_epoch))
    torch.save(manager.raw_model.state_dict(), out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
