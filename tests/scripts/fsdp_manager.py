"""Launched by `tests/test_fsdp_manager.py` under torchrun: `Manager(..., strategy=FSDP2)` end to end (issue 24).

Usage: python -m torch.distributed.run --standalone --nproc_per_node=W fsdp_manager.py OUT (train|resume)

Data: `fsdp_common.data()` (72 samples) in a DataLoader with the user's `DistributedSampler(seed=0)`,
batches of 12 / W per process, so that update t of epoch e trains samples [12t, 12t + 12) of
`randperm(72, seed e)` whatever W is. Each process records the sample ids it loaded.

`train` (W = 2): every case shares the launch:
- `bf16`: FSDP2Strategy(units=Block), bf16-mixed, accumulation over 2 batches, Adam from a factory, 3
  epochs, a `LastCheckpoint(background=True)` every update (asynchronous sharded saves). Whole weights
  `bf16.pt`, the checkpoint folder `bf16.ckpt`; then `test` on 5 batches and a checkpoint `after.ckpt`
  saved outside `fit`.
- `fp32`: a model built on the meta device, strategy="fsdp", accumulation 2, clipping at 0.5, validation on
  5 batches of 4 (shares 3 and 2) each epoch, 3 epochs, a sharded checkpoint `two.ckpt` asked for at
  update 2 (mid-epoch 0); then `test` on the 5 batches and on 2 (a share each), `predict` on the 5.
  Whole weights `fp32.pt`.
- `divergent`: per-process seeds and dropout; a checkpoint `divergent.ckpt` at update 1.
- the uninterrupted run of `fsdp_kill_manager.py` (`none_final.pt`).
`resume` (W = 1 or 3): resumes `two.ckpt` on a meta-device model of other weights and trains to the end of
epoch 3 as `fp32` did (whole weights `resumed{W}.pt`), tests and predicts as `fp32`, and tries to resume
`divergent.ckpt` (the error is recorded).
Each process writes `{mode}{W}_rank{RANK}.pt`: what it recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from fsdp_common import Block, Net, data
from fsdp_kill_manager import run as kill_case
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from torchmanager import Manager
from torchmanager.callbacks import Callback, LastCheckpoint
from torchmanager_core import distributed
from torchmanager_core.checkpoint.sharded import save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy, is_fully_sharded

EPOCHS = 3


class Logged(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The samples of `data()`, recording the id of each sample loaded."""

    def __init__(self) -> None:
        self.x, self.y = data()
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.loaded.append(int(index))
        return self.x[index], self.y[index]


def loader(dataset: Logged) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=12 // dist.get_world_size(), sampler=DistributedSampler(dataset, seed=0))


class SaveAt(Callback):
    """Asks for a checkpoint at `path` after update `step`."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__()
        self.step, self.path, self.done = step, str(path), False

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.global_step == self.step and not self.done:
            self.done = True
            self.manager.save_checkpoint(self.path)


def evaluation(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)]


def fp32_manager(seed: int) -> Manager[Any]:
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Net()
    return Manager(
        model,
        lambda params: torch.optim.Adam(params, lr=0.01),
        torch.nn.CrossEntropyLoss(),
        strategy="fsdp",
        accumulate_grad_batches=2,
        clip_grad_norm=0.5,
    )


def evaluate(manager: Manager[Any], record: dict[str, Any]) -> None:
    x, y = data()
    record["test5"] = manager.test(evaluation(x, y), show_verbose=False)
    record["test2"] = manager.test(evaluation(x, y)[:2], show_verbose=False)
    record["predict"] = manager.predict([batch for batch, _ in evaluation(x, y)], show_verbose=False)


def train(out: Path, record: dict[str, Any]) -> None:
    torch.manual_seed(0)
    dataset = Logged()
    manager = Manager(
        Net(),
        lambda params: torch.optim.Adam(params, lr=0.01),
        torch.nn.CrossEntropyLoss(),
        strategy=FSDP2Strategy(units=(Block,)),
        precision="bf16-mixed",
        accumulate_grad_batches=2,
    )
    last = LastCheckpoint(manager, str(out / "bf16.ckpt"), save_every_n_steps=1, background=True)
    manager.fit(loader(dataset), epochs=EPOCHS, callbacks_list=[last], show_verbose=False)
    save_full_state_dict(manager.model, out / "bf16.pt")
    x, y = data()
    record["bf16_test"] = manager.test(evaluation(x, y), show_verbose=False)  # the model sharded by `fit`, as it is
    manager.save_checkpoint(out / "after.ckpt")  # outside a run: every process its shards
    record["bf16_units"] = [name for name, module in manager.model.named_modules() if is_fully_sharded(module)]
    record["bf16_history"] = list(manager.history)

    dataset = Logged()
    manager = fp32_manager(0)
    x, y = data()
    callbacks = [SaveAt(2, out / "two.ckpt")]
    manager.fit(loader(dataset), epochs=EPOCHS, val_dataset=evaluation(x, y), callbacks_list=callbacks)
    save_full_state_dict(manager.model, out / "fp32.pt")
    record["fp32_history"] = list(manager.history)
    record["fp32_loaded"] = dataset.loaded
    evaluate(manager, record)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Dropout(0.3), torch.nn.Linear(9, 3))
    torch.manual_seed(50 + dist.get_rank())  # per-process random streams
    divergent = Manager(
        model, lambda params: torch.optim.SGD(params, lr=0.1), torch.nn.CrossEntropyLoss(), strategy="fsdp"
    )
    divergent.fit(loader(Logged()), epochs=1, callbacks_list=[SaveAt(1, out / "divergent.ckpt")])
    kill_case(out, "none")


def resume(out: Path, record: dict[str, Any]) -> None:
    dataset = Logged()
    manager = fp32_manager(1000 + dist.get_rank())  # other weights: the checkpoint must replace them
    x, y = data()
    manager.fit(loader(dataset), epochs=EPOCHS, val_dataset=evaluation(x, y), resume_from=str(out / "two.ckpt"))
    save_full_state_dict(manager.model, out / f"resumed{dist.get_world_size()}.pt")
    record["history"] = list(manager.history)
    record["loaded"] = dataset.loaded
    record["global_step"] = manager.global_step
    evaluate(manager, record)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Dropout(0.3), torch.nn.Linear(9, 3))
    divergent = Manager(
        model, lambda params: torch.optim.SGD(params, lr=0.1), torch.nn.CrossEntropyLoss(), strategy="fsdp"
    )
    try:
        divergent.fit(loader(Logged()), epochs=1, resume_from=str(out / "divergent.ckpt"))
        record["divergent"] = "no error"
    except ValueError as error:
        record["divergent"] = str(error)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    distributed.init_from_environment()
    record: dict[str, Any] = {}
    (train if mode == "train" else resume)(out, record)
    torch.save(record, out / f"{mode}{dist.get_world_size()}_rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main()
