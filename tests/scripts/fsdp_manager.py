"""Launched by `tests/test_fsdp_manager.py` under torchrun (2 CPU processes): `Manager(..., strategy=FSDP2Strategy)`.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 fsdp_manager.py OUT

Trains `Net` for 3 epochs on a list of 12 batches of 6 samples (dealt out batch by batch: rank r takes
batches r, r + 2, ...), updates over 2 batches, clipped at 0.5, Adam built by a factory over the shards;
then tests on 5 batches of 4 (shares of 3 and 2). Writes `OUT/manager.pt` (the whole weights) and
`OUT/summary{RANK}.pt` (the test summary). Needs the loop to take a strategy (issue 19's seam).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from fsdp_common import Block, Net, data

from torchmanager import Manager
from torchmanager_core import distributed
from torchmanager_core.checkpoint.sharded import save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    x, y = data()
    manager = Manager(
        Net(),
        lambda params: torch.optim.Adam(params, lr=0.01),
        torch.nn.CrossEntropyLoss(),
        strategy=FSDP2Strategy(units=(Block,)),
        accumulate_grad_batches=2,
        clip_grad_norm=0.5,
    )
    train = [(x[i : i + 6], y[i : i + 6]) for i in range(0, 72, 6)]
    manager.fit(train, epochs=3, show_verbose=False)
    summary = manager.test([(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)], show_verbose=False)
    save_full_state_dict(manager.model, out / "manager.pt")
    torch.save(summary, out / f"summary{distributed.get_rank()}.pt")


if __name__ == "__main__":
    main()
