"""Write checkpoint files with upstream torchmanager 1.5, as its users do, and what upstream loads back from them.

Run it once with a Python that has upstream `torchmanager==1.5` (never ours):

    /tmp/up15/bin/python scripts/upstream15_checkpoint.py tests/data

It writes, for tests/test_upstream_checkpoints.py:
- `upstream15_manager.model`: `LastCheckpoint(manager, path)` after 2 epochs of `fit` (the whole
  manager pickled, upstream's usual file);
- `upstream15_model.model`: `LastCheckpoint(model, path, optimizer=optimizer)` in the same run (the
  model and optimizer objects pickled);
- `upstream15_weights.model`: `Checkpoint(model, optimizer=..., save_weights_only=True).save(...)`
  after it (a state dict and a pickled optimizer; upstream's `LastCheckpoint` with
  `save_weights_only=True` fails from its second save on, so users saved such files once);
- `upstream15_subclass.model`: `LastCheckpoint(manager, path)` of a manager subclass
  (`tests/data/upstream15_subclass.py`), as projects built on 1.5 subclass the managers;
- `upstream15_reference.pt`: plain tensors and numbers (loadable with `weights_only=True`) of what
  upstream itself loads from each file: the model's state dict, the optimizer's state dict and the
  epoch (`current_epoch` of the manager from `Manager.from_checkpoint`, else the file's `last_epoch`).

The model and optimizer are torch classes, so unpickling the files needs no module of this script.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmanager
from torchmanager import callbacks, losses, metrics
from torchmanager_core.checkpoint import Checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
from upstream15_subclass import StepsManager  # pickled by this module name


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def main(folder: str) -> None:
    warnings.simplefilter("ignore")
    assert str(torchmanager.version) == "1.5", "run this with upstream torchmanager 1.5"
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    data = DataLoader(TensorDataset(x, y), batch_size=8)
    os.makedirs(folder, exist_ok=True)
    manager_path = os.path.join(folder, "upstream15_manager.model")
    model_path = os.path.join(folder, "upstream15_model.model")
    weights_path = os.path.join(folder, "upstream15_weights.model")
    subclass_path = os.path.join(folder, "upstream15_subclass.model")

    model, optimizer = build()
    manager = torchmanager.Manager(
        model, optimizer, loss_fn=losses.MSE(), metrics={"mae": metrics.MAE()}
    )  # upstream 1.5's SparseCategoricalAccuracy fails on any input, so a regression
    last = callbacks.LastCheckpoint(manager, manager_path)
    objects = callbacks.LastCheckpoint(model, model_path, optimizer=optimizer)
    manager.fit(data, epochs=2, callbacks_list=[last, objects])
    Checkpoint(model, optimizer=optimizer, save_weights_only=True).save(1, weights_path)
    sub_model, sub_optimizer = build()
    sub = StepsManager(sub_model, 10, sub_optimizer, losses.MSE())
    sub.fit(data, epochs=3, callbacks_list=[callbacks.LastCheckpoint(sub, subclass_path)])

    loaded = torchmanager.Manager.from_checkpoint(manager_path)
    assert loaded.optimizer is not None
    with_objects = Checkpoint.from_saved(model_path)
    fresh, _ = build()
    with_weights = Checkpoint.from_saved(weights_path, model=fresh)
    subclassed = StepsManager.from_checkpoint(subclass_path)
    assert isinstance(subclassed, StepsManager) and subclassed.time_steps == 10 and subclassed.optimizer is not None
    assert with_objects.optimizer is not None and with_weights.optimizer is not None
    reference = {
        "manager": {
            "model": loaded.raw_model.state_dict(),
            "optimizer": loaded.optimizer.state_dict(),
            "epoch": loaded.current_epoch,
        },
        "model": {
            "model": with_objects.model.state_dict(),
            "optimizer": with_objects.optimizer.state_dict(),
            "epoch": with_objects.last_epoch,
        },
        "weights": {
            "model": fresh.state_dict(),
            "optimizer": with_weights.optimizer.state_dict(),
            "epoch": with_weights.last_epoch,
        },
        "subclass": {
            "model": subclassed.raw_model.state_dict(),
            "optimizer": subclassed.optimizer.state_dict(),
            "epoch": subclassed.current_epoch,
        },
    }
    with tempfile.TemporaryDirectory() as scratch:  # check the reference reads back without running code
        torch.save(reference, os.path.join(scratch, "r.pt"))
        torch.load(os.path.join(scratch, "r.pt"), weights_only=True)
    torch.save(reference, os.path.join(folder, "upstream15_reference.pt"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data")
