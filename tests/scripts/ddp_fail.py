"""Launched by `tests/test_torchrun.py` under `torchrun --nproc_per_node=2`: rank 1 fails in epoch 2.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_fail.py OUT raise|hang|stop

When epoch 2 starts, a callback on rank 1 raises ("raise") or blocks for 10 minutes ("hang", a
stuck rank), while rank 0 goes on into the epoch's first gradient all-reduce. Either way the
launch must end with an error rather than hang: with "hang", after `TORCHMANAGER_DIST_TIMEOUT`.
With "stop", rank 1 alone raises `StopTraining` when epoch 1 ends: both ranks must stop there,
cleanly. A rank writes `OUT/rank{RANK}-finished` (with its epoch count) only if its `fit` returned.
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

    def on_epoch_start(self, epoch: int) -> None:
        if self.mode != "stop" and epoch == 1 and torchmanager.distributed.get_rank() == 1:
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
    (out / f"rank{os.environ['RANK']}-finished").write_text(str(manager.current_epoch))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
