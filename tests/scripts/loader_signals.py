"""A main process that handles SIGTERM and SIGUSR1 (as `fit` does) while a loader's worker processes load its
batches, for tests/test_loader_signals.py, which signals this script's whole process group (`os.killpg`).

`python loader_signals.py KIND PROTECT EPOCHS`: KIND `dataset` (a torchmanager `Dataset`, its loader
processes living across epochs) or `dataloader` (a plain `DataLoader`); PROTECT `yes` applies
`loader_workers.protect_workers`. Prints `workers <pid>...` once the workers run, `batch <e> <i>`
after each batch, then `done <batches> signals <numbers>` and keeps the `Dataset` alive until the
interpreter exits (so its loader processes are ended at exit).

`python loader_signals.py fit CHECKPOINT`: `Manager.fit` over a `Dataset` with one loader process (the
data package's default on 2 CPUs) and a `LastCheckpoint`, printing `batch <e> <i>` after each batch: a
signal to the whole job must end it as a preemption (exit 143, the checkpoint saved).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data import Dataset as TorchDataset

from torchmanager_core.loader_workers import protect_workers
from torchmanager_data import Dataset

N, BATCH = 48, 4


def item(index: int) -> torch.Tensor:
    time.sleep(0.02)
    info = get_worker_info()
    return torch.tensor([index, os.getpid() if info is not None else 0])


class Items(Dataset[torch.Tensor]):
    @property
    def unbatched_len(self) -> int:
        return N

    def __getitem__(self, index: int) -> torch.Tensor:
        return item(index)


class Plain(TorchDataset[torch.Tensor]):
    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> torch.Tensor:
        return item(index)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


KEEP: list[Any] = []


def fit(path: str) -> None:
    import torchmanager
    from torchmanager.callbacks import Callback, LastCheckpoint

    class Say(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            say(f"batch {self.manager.current_epoch} {batch}")

    class Pairs(Items):
        def __getitem__(self, index: int) -> Any:
            return item(index)[:1].float(), torch.tensor(index % 2)

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 2)
    manager = torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.01), loss_fn=torchmanager.losses.CrossEntropy()
    )
    manager.fit(Pairs(BATCH, num_workers=1), epochs=2, callbacks_list=[Say(), LastCheckpoint(manager, path)])


def main() -> None:
    if sys.argv[1] == "fit":
        return fit(sys.argv[2])
    kind, protect, epochs = sys.argv[1], sys.argv[2] == "yes", int(sys.argv[3])
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, lambda number, frame: received.append(number))
    source: Any = Items(BATCH, num_workers=2) if kind == "dataset" else DataLoader(Plain(), BATCH, num_workers=2)
    if protect:
        protect_workers(source)
    count, pids = 0, set()
    for epoch in range(epochs):
        for index, batch in enumerate(source):
            x = batch[0] if kind == "dataset" else batch
            new = {int(pid) for pid in x[:, 1]} - pids
            pids |= new
            if len(pids) == 2 and new:
                say("workers " + " ".join(str(pid) for pid in sorted(pids)))
            count += 1
            say(f"batch {epoch} {index}")
    say(f"done {count} signals {' '.join(str(number) for number in sorted(received))}")
    KEEP.append(source)  # a Dataset's loader processes are still alive when the interpreter exits


if __name__ == "__main__":
    main()
