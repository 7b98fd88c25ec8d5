"""Launched by `tests/test_rank_state.py` under torchrun (2 CPU processes, DDP): what a checkpoint holds per process.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_rank_state.py OUT

Every case shares the launch; each resumes, in the same processes, a checkpoint its uninterrupted run wrote,
into a new manager whose model has other weights, and records both runs' ends in `OUT/rank{RANK}.pt`:
- `seeds`: per-process seeds and dropout, an accuracy metric; a checkpoint asked for at update 3 (mid-epoch).
- `window`: accumulation over 3 batches, per-process seeds and dropout; a checkpoint asked for after batch
  index 4 (inside the window of batches 3..5: written at its end); and a run stopped in it (StopTraining with
  the same request: written where it stopped, with each process's gradients of the open window).
- `compiled`: `Manager(torch.compile(model, backend=counting))` with accumulation over 2 batches; the compiled
  graph's calls and DDP's gradient reductions (a communication hook) are counted; a checkpoint's keys.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader, TensorDataset

from torchmanager import Manager
from torchmanager.callbacks import Callback
from torchmanager.metrics import SparseCategoricalAccuracy
from torchmanager_core import distributed
from torchmanager_core.errors import StopTraining
from torchmanager_core.strategy.ddp import _find_ddp

SAMPLES, BATCH = 64, 4  # 8 batches an epoch in each process


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(SAMPLES, 5, generator=generator), torch.randint(0, 3, (SAMPLES,), generator=generator)


def loader() -> DataLoader[Any]:
    return DataLoader(TensorDataset(*data()), batch_size=BATCH, shuffle=True)  # sharded: DistributedSampler(seed 0)


def model(seed: int, dropout: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 3)
    )


class SaveAt(Callback):
    """Asks for a checkpoint at `path` once: after update `step`, or after batch index `batch` of the first epoch
    (then raising `StopTraining` too with `stop`)."""

    def __init__(self, path: Path, *, step: int | None = None, batch: int | None = None, stop: bool = False) -> None:
        super().__init__()
        self.path, self.step, self.batch, self.stop, self.done = str(path), step, batch, stop, False

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        due = self.manager.global_step == self.step if self.step is not None else batch == self.batch
        if due and not self.done:
            self.done = True
            self.manager.save_checkpoint(self.path)
            if self.stop:
                raise StopTraining("stopped inside an accumulation window")


def weights(manager: Manager[Any]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in manager.raw_model.state_dict().items()}


def pair(out: Path, name: str, make: Any, callback: SaveAt, record: dict[str, Any], **fit: Any) -> None:
    """The uninterrupted run of `make(seed)` with `callback`, then a new manager resuming its checkpoint."""
    uninterrupted = make(0)
    torch.manual_seed(10 + dist.get_rank())  # each process its own random stream
    uninterrupted.fit(loader(), epochs=2, callbacks_list=[callback], **fit)
    record[name] = {"weights": weights(uninterrupted), "history": list(uninterrupted.history)}
    resumed = make(1)
    torch.manual_seed(99)  # generators elsewhere: the checkpoint must set them
    resumed.fit(loader(), epochs=2, resume_from=callback.path, **fit)
    record[name].update(resumed=weights(resumed), resumed_history=list(resumed.history))
    record[name]["saved"] = torch.load(callback.path, weights_only=True)


def main() -> None:
    out = Path(sys.argv[1])
    distributed.init_from_environment()
    record: dict[str, Any] = {}

    def seeds(seed: int) -> Manager[Any]:
        net = model(seed, 0.3)
        metrics = {"accuracy": SparseCategoricalAccuracy()}
        return Manager(net, torch.optim.SGD(net.parameters(), lr=0.3), torch.nn.CrossEntropyLoss(), metrics)

    pair(out, "seeds", seeds, SaveAt(out / "seeds.model", step=3), record)

    def window(seed: int) -> Manager[Any]:
        net = model(seed, 0.3)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
        return Manager(net, optimizer, torch.nn.CrossEntropyLoss(), accumulate_grad_batches=3)

    pair(out, "window", window, SaveAt(out / "window.model", batch=4), record)
    stopped = window(0)
    torch.manual_seed(10 + dist.get_rank())
    # asked for after batch index 3: under torchrun a stop takes effect after the next batch (the processes agree
    # in the background), so the run stops after batch 4, inside the window of batches 3..5
    stopped.fit(loader(), epochs=2, callbacks_list=[SaveAt(out / "stopped.model", batch=3, stop=True)])
    resumed = window(1)
    torch.manual_seed(99)
    resumed.fit(loader(), epochs=2, resume_from=str(out / "stopped.model"))
    record["stopped"] = {"resumed": weights(resumed), "saved": torch.load(out / "stopped.model", weights_only=True)}

    calls = [0]

    def counting(graph: torch.fx.GraphModule, inputs: Any) -> Any:
        def run(*args: Any) -> Any:
            calls[0] += 1
            return graph.forward(*args)

        return run

    reductions = [0]

    class CountReductions(Callback):
        def on_train_start(self, initial_epoch: int = 0) -> None:
            wrapped = _find_ddp(self.manager.model)
            assert wrapped is not None

            def count() -> None:
                reductions[0] += 1

            # unannotated (DDP compares annotations, which this module keeps as strings)
            wrapped.register_comm_hook(None, lambda state, bucket: (count(), allreduce_hook(state, bucket))[1])

    net = model(0, 0.0)
    compiled = torch.compile(net, backend=counting)
    manager = Manager(
        compiled, torch.optim.SGD(compiled.parameters(), lr=0.3), torch.nn.CrossEntropyLoss(), accumulate_grad_batches=2
    )
    manager.fit(loader(), epochs=2, callbacks_list=[CountReductions()])
    manager.save_checkpoint(out / "compiled.model")
    record["compiled"] = {
        "weights": weights(manager),
        "calls": calls[0],
        "reductions": reductions[0],
        "model_is_given": manager.model is compiled,
        "keys": sorted(torch.load(out / "compiled.model", weights_only=True)["model"]),
    }
    torch.save(record, out / f"rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main()
