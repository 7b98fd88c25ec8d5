"""Writes tests/data/format1.model: a mid-epoch checkpoint in format 1, by torchmanager at commit 78afd00.

Run with that commit's packages on the path (a `git worktree` of it), once; the file and the values it
must restore (tests/data/format1.expected.pt: weights, optimizer state, metric totals, position) are
kept in the repository, with the weights that run ended with (2 epochs of 6 batches, nothing random), so
later formats are tested against what an earlier release really wrote and how it went on.

Usage: PYTHONPATH=<old>/packages/torchmanager-core/src:... python make_format1_checkpoint.py OUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from torchmanager_core import Callback, Manager

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packages" / "torchmanager-core" / "tests"))
from core_testkit import Accuracy  # the metric the core tests use


class SaveAt(Callback):
    def __init__(self, manager: Manager, path: Path) -> None:
        self.manager, self.path = manager, path

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.current_epoch == 1 and batch == 2:
            self.manager.save_checkpoint(self.path)
            self.expected = {
                "model": {k: v.clone() for k, v in self.manager.raw_model.state_dict().items()},
                "momentum": [s["momentum_buffer"].clone() for s in self.manager.optimizer.state.values()],
                "correct": self.manager.metric_fns["accuracy"].correct.clone(),
                "seen": self.manager.metric_fns["accuracy"].seen.clone(),
                "epoch": 1,
                "step": 3,
            }


def main(out: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(48, 4)
    y = (x[:, 0] > 0).long()
    data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager = Manager(model, optimizer, loss_fn=torch.nn.CrossEntropyLoss(), metrics={"accuracy": Accuracy()})
    saver = SaveAt(manager, out / "format1.model")
    manager.fit(data, epochs=2, callbacks_list=[saver])
    final = {k: v.clone() for k, v in manager.raw_model.state_dict().items()}
    torch.save({**saver.expected, "final": final}, out / "format1.expected.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
