"""Launched by `tests/test_fsdp.py`, which SIGKILLs it during an asynchronous sharded save.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 fsdp_kill.py OUT data
       python fsdp_kill.py OUT commit            (one process, no process group)

A model (FSDP2 under torchrun, plain in one process) is saved asynchronously to `OUT/ckpt` and waited
for: that checkpoint is complete, and its whole weights go to `OUT/first.pt`. The model trains a step
and a second asynchronous save starts; it stops at the point named and waits to be killed, each
process writing `OUT/stopped{RANK}` there:
- data: every process wrote its shards (`write_data` returned), `.metadata` is not written yet;
- commit: `.metadata` is written, `complete.pt` does not name the new version yet.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from fsdp_common import Block, Net, share, train
from torch.distributed.checkpoint.filesystem import FileSystemWriter

from torchmanager_core import distributed
from torchmanager_core.checkpoint import sharded
from torchmanager_core.checkpoint.sharded import ShardedCheckpointer, save_full_state_dict
from torchmanager_core.strategy.base import Strategy
from torchmanager_core.strategy.fsdp import FSDP2Strategy

CPU = torch.device("cpu")


class Plain(Strategy):
    """One process, no wrapper: the checkpoint layer alone."""

    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model.to(device)


def stop_after(function: Any, out: Path) -> Any:
    """`function`, which after it ran marks this process stopped and waits to be killed."""

    def stopped(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        (out / f"stopped{distributed.get_rank()}").write_text(str(os.getpid()))
        time.sleep(600)
        return result

    return stopped


def stop_before(function: Any, out: Path) -> Any:
    def stopped(*args: Any, **kwargs: Any) -> Any:
        (out / f"stopped{distributed.get_rank()}").write_text(str(os.getpid()))
        time.sleep(600)
        return function(*args, **kwargs)

    return stopped


def main() -> None:
    out, point = Path(sys.argv[1]), sys.argv[2]
    distributed.init_from_environment()
    torch.manual_seed(0)
    strategy: Strategy = FSDP2Strategy(units=(Block,)) if distributed.is_distributed() else Plain()
    model = strategy.setup(Net(), CPU)
    optimizer = strategy.prepare_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.1))
    batches = share(0, 0, distributed.get_world_size(), distributed.get_rank())
    saver = ShardedCheckpointer(async_save=True)

    def save(step: int) -> None:
        tensors = {
            "model": strategy.model_state_dict(model),
            "optimizer": strategy.optimizer_state_dict(model, optimizer, stepped=True),  # a stepped state's layout
        }
        saver.save(out / "ckpt", tensors, run={"global_step": step}, rank={"rank": distributed.get_rank()})

    train(model, batches[:1], optimizer)
    save(1)
    saver.wait()
    save_full_state_dict(model, out / "first.pt")
    train(model, batches[1:2], optimizer)
    if point == "data":
        FileSystemWriter.write_data = stop_after(FileSystemWriter.write_data, out)  # type: ignore[method-assign]
    else:
        sharded._commit = stop_before(sharded._commit, out)  # type: ignore[assignment]
    save(2)
    time.sleep(600)  # the write goes on in the background until the kill


if __name__ == "__main__":
    main()
