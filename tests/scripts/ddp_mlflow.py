"""Launched by `tests/test_mlflow_under_torchrun.py` under torchrun with 2 processes: an `MLflowLogger` run.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_mlflow.py OUT

Each rank trains on its half of 8 batches (4 steps an epoch, 2 epochs), logging every step to the
store in OUT/mlruns with a `LastCheckpoint` in OUT; each rank writes OUT/rank{RANK}.json with the
summary `fit` returned and the logger's run id (None where it did not log).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import torchmanager
from torchmanager.callbacks import LastCheckpoint, MLflowLogger


def main(out: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=generator), torch.randint(0, 2, (64,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    manager = torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )
    logger = MLflowLogger("ddp", configs={"world": 2}, folder=out / "mlruns", log_every_n_steps=1)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    _, summary = manager.fit(
        batches,
        epochs=2,
        callbacks_list=[LastCheckpoint(manager, str(out / "last.model")), logger],
        return_summary=True,
    )
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"summary": summary, "run_id": logger.run_id}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
