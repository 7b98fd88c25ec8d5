"""Launched by `tests/test_torchrun_agreement.py` under torchrun (2 or 3 CPU processes): every process takes the
same decisions and makes the same collectives.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=N torchrun_agreement.py OUT

Runs, in one launch (each torchrun start costs seconds), with OUT as the working folder: evaluation
with metrics of every reduction where some process gets no batch; `test`/`predict` of a frozen
model; training and validation on loaders the user sharded with their own `DistributedSampler`
(as the sampler, in torch's `BatchSampler`, in a batch sampler of their own); training, validation
and `predict` on an `IterableDataset` that shards itself, with uneven shares; validation on a loader
with loader processes (each process records the loader processes it started); an `Experiment`
whose run stopped on an error and is run again in the same script (with `Configs`, and a sibling
`LastCheckpoint(..., save_every_n_steps=2)`); last, a model with a parameter that gets no
gradient, with and without `strategy=DDP(find_unused_parameters=True)`. Each rank writes
`OUT/rank{RANK}.pt`; rank 0 also writes `OUT/inputs.pt` (data and initial weights) for the
test's single-process references.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, TensorDataset

import torchmanager
from torchmanager.callbacks import Experiment, LastCheckpoint
from torchmanager.configs import Configs
from torchmanager_core import distributed
from torchmanager_core.errors import ModelError
from torchmanager_core.strategy import DDP

LR, BATCH, CHUNK = 0.5, 4, 4
EVAL_SIZES = ((3, 4), (5, 4), (9, 2))
"""(samples, batch size): 1 batch (only rank 0 has one), 2 batches (rank 2 of 3 has none), 5 batches."""
TRAIN_SIZE, STREAM_CHUNKS, STREAM_VAL_CHUNKS = 24, 11, 5


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


# -- metrics of every reduction ------------------------------------------------------------------------


class Median(torchmanager.metrics.Metric):
    """The median of every sample's first logit: a "cat" state, one row per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("firsts", torch.zeros(0), "cat")

    def update(self, input: torch.Tensor, target: Any) -> torch.Tensor:
        self.firsts = torch.cat([self.firsts, input[:, 0].detach().float()])
        return input[:, 0].median()

    def compute(self) -> torch.Tensor:
        return self.firsts.median()


class Extreme(torchmanager.metrics.Metric):
    """The sum over classes of the highest ("max") or lowest ("min") logit shifted by `shift`: a state that takes
    its shape (one value a class) at the first batch, as a metric's mean state does."""

    def __init__(self, reduction: str, shift: float) -> None:
        super().__init__()
        self.reduction, self.shift = reduction, shift
        self.add_state("extreme", torch.zeros(()), reduction)  # type: ignore[arg-type]
        self.seen = False

    def update(self, input: torch.Tensor, target: Any) -> torch.Tensor:
        values = input.detach().float() + self.shift
        batch = values.amax(0) if self.reduction == "max" else values.amin(0)
        if not self.seen:
            self.extreme = batch
        else:
            self.extreme = (
                torch.maximum(self.extreme, batch) if self.reduction == "max" else torch.minimum(self.extreme, batch)
            )
        self.seen = True
        return batch.sum()

    def reset(self) -> None:
        super().reset()
        self.seen = False

    def compute(self) -> torch.Tensor:
        return self.extreme.sum()


class RankMean(torch.nn.Module):
    """A metric in torchmetrics' way (not ours): a state declared with the "mean" reduction, averaged over the
    processes. On each process it is the mean of that process's batch means of the first logit."""

    reductions: ClassVar[dict[str, str]] = {"average": "mean"}

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("average", torch.zeros(()))
        self.batches = 0

    def forward(self, input: torch.Tensor, target: Any) -> torch.Tensor:
        value = input[:, 0].detach().float().mean()
        self.batches += 1
        self.average = self.average + (value - self.average) / self.batches
        return value

    def reset(self) -> None:
        self.average = torch.zeros((), device=self.average.device)
        self.batches = 0

    @property
    def result(self) -> torch.Tensor:
        return self.average


def reduction_metrics() -> dict[str, Any]:
    return {
        "accuracy": torchmanager.metrics.SparseCategoricalAccuracy(),
        "median": Median(),
        "highest": Extreme("max", -100.0),
        "lowest": Extreme("min", 100.0),
        "rank_mean": RankMean(),
    }


# -- the user's distributed samplers and data that shards itself ---------------------------------------


class SortedBatches:
    """A batch sampler of the user's: its sampler's indices in batches of `size`, each batch sorted."""

    def __init__(self, sampler: Any, size: int) -> None:
        self.sampler, self.size = sampler, size

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        for start in range(0, len(indices), self.size):
            yield sorted(indices[start : start + self.size])

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.size)


def user_loader(kind: str, x: torch.Tensor, y: torch.Tensor) -> DataLoader[Any]:
    """A loader sharded by the user: a shuffled `DistributedSampler` (seed 3) as the sampler or inside a batch sampler."""
    pairs = TensorDataset(x, y)
    sampler: DistributedSampler[Any] = DistributedSampler(pairs, shuffle=True, seed=3)
    if kind == "sampler":
        return DataLoader(pairs, batch_size=BATCH, sampler=sampler)
    if kind == "batch_sampler":
        return DataLoader(pairs, batch_sampler=BatchSampler(sampler, BATCH, drop_last=False))
    return DataLoader(pairs, batch_sampler=SortedBatches(sampler, BATCH))  # type: ignore[arg-type]


def stream_chunks(chunks: int, epoch: int, rank: int, world: int, worker: int = 0, workers: int = 1) -> list[int]:
    """The chunks of `CHUNK` samples a process's loader process yields: the epoch's order (rotated by the epoch),
    dealt to the processes in turn, then to its loader processes in turn."""
    order = [(c + epoch) % chunks for c in range(chunks)]
    return order[rank::world][worker::workers]


class Stream(IterableDataset):  # type: ignore[type-arg]
    """Samples that shard themselves: each process (and loader process) reads only its chunks."""

    shards_itself = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.epoch = x, y, 0
        self.told: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.told.append(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        for chunk in stream_chunks(len(self.y) // CHUNK, self.epoch, rank, world, worker, workers):
            for i in range(chunk * CHUNK, (chunk + 1) * CHUNK):
                yield self.x[i], self.y[i]


class Recording(torchmanager.Manager):
    """Keeps every training batch it steps on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train_step(self, x_train: torch.Tensor, y_train: torch.Tensor) -> dict[str, Any]:
        self.seen.append((x_train.clone(), y_train.clone()))
        return super().train_step(x_train, y_train)


def recording(model: torch.nn.Module, **options: Any) -> Recording:
    return Recording(
        model,
        torch.optim.SGD(model.parameters(), lr=LR),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
        **options,
    )


def keep_epochs() -> tuple[list[dict[str, float]], Any]:
    """A list of each epoch's summary (validation values prefixed `val_`), and the callback filling it."""
    epochs: list[dict[str, float]] = []

    @torchmanager.callbacks.on_epoch_end
    def keep(epoch: int, summary: Mapping[str, float]) -> None:
        epochs.append(dict(summary))

    return epochs, keep


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# -- the cases -----------------------------------------------------------------------------------------


def reductions(result: dict[str, Any]) -> None:
    model = make_model()
    manager = torchmanager.Manager(model, loss_fn=torchmanager.losses.CrossEntropy(), metrics=reduction_metrics())
    for n, batch in EVAL_SIZES:
        x, y = make_data(n, 10 + n)
        result["test"][n, batch] = manager.test([(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)])
    x, y = make_data(3, 13)  # validation of one batch: only rank 0 has it
    trained, (epochs, keep) = make_model(), keep_epochs()
    torchmanager.Manager(
        trained,
        torch.optim.SGD(trained.parameters(), lr=LR),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics=reduction_metrics(),
    ).fit([make_data(4, 1)], epochs=2, val_dataset=[(x, y)], callbacks_list=[keep])
    result["validation"] = {"epochs": epochs, "weights": weights(trained)}


def frozen(result: dict[str, Any]) -> None:
    model = make_model().requires_grad_(False)
    manager = torchmanager.Manager(model, loss_fn=torchmanager.losses.CrossEntropy(), metrics=reduction_metrics())
    x, y = make_data(9, 19)
    batches = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 9, 2)]
    result["frozen"] = {"test": manager.test(batches), "predict": manager.predict(batches)}


def user_samplers(
    result: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]
) -> None:
    for kind in ("sampler", "batch_sampler", "own_batch_sampler"):
        model = make_model()
        manager = recording(model)
        epochs, keep = keep_epochs()
        manager.fit(user_loader(kind, *train), epochs=2, val_dataset=user_loader(kind, *val), callbacks_list=[keep])
        result["user"][kind] = {"seen": manager.seen, "epochs": epochs, "weights": weights(model)}


def streams(
    result: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = make_model()
    manager = recording(model)
    stream, (epochs, keep) = Stream(*train), keep_epochs()
    manager.fit(
        DataLoader(stream, batch_size=CHUNK, num_workers=2),
        epochs=2,
        val_dataset=DataLoader(Stream(*val), batch_size=CHUNK),
        callbacks_list=[keep],
    )
    predicted = manager.predict(DataLoader(Stream(*val), batch_size=CHUNK))
    tested = manager.test(DataLoader(Stream(*val), batch_size=CHUNK, num_workers=2))
    result["stream"] = {
        "seen": manager.seen,
        "epochs": epochs,
        "weights": weights(model),
        "told": stream.told,
        "predict": predicted,
        "test": tested,
    }


def note_worker(worker_id: int) -> None:
    with open(f"workers{os.environ['RANK']}.txt", "a") as file:
        file.write(f"{os.getpid()}\n")


def loader_processes(
    result: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = make_model()
    val_loader = DataLoader(TensorDataset(*val), batch_size=2, num_workers=2, worker_init_fn=note_worker)
    (epochs, keep), manager = keep_epochs(), recording(model)
    manager.fit([train], epochs=3, val_dataset=val_loader, callbacks_list=[keep])
    tests = [manager.test(val_loader) for _ in range(2)]
    result["workers"] = {"epochs": epochs, "tests": tests, "weights": weights(model)}


class RunConfigs(Configs):
    def show_settings(self) -> None:
        pass


class FailAtEpoch(torchmanager.callbacks.Callback):
    def on_epoch_start(self, epoch: int) -> None:
        if epoch == 1:
            raise RuntimeError("stopped on purpose when epoch 2 started")


def experiment_retry(result: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor]) -> None:
    batches = [(train[0][i : i + BATCH], train[1][i : i + BATCH]) for i in range(0, TRAIN_SIZE, BATCH)]
    reference = make_model()
    recording(reference).fit(batches, epochs=3)
    record: dict[str, Any] = {"reference": weights(reference)}

    model = make_model()
    manager = recording(model)
    experiment = Experiment("retry", manager, resume="auto")
    steps = LastCheckpoint(manager, experiment.last_ckpt_path, save_every_n_steps=2)
    try:
        manager.fit(batches, epochs=3, callbacks_list=[experiment, steps, FailAtEpoch()])
    except RuntimeError as error:
        record["error"] = str(error)
    configs = RunConfigs.from_arguments(
        ["--experiment", "retry"]
    )  # the folder rule at start-up, as a script applies it
    record["configs"] = (configs.experiment, configs.resume_experiment)

    model = make_model()
    manager = recording(model)
    experiment = Experiment("retry", manager, resume="auto")
    steps = LastCheckpoint(manager, experiment.last_ckpt_path, save_every_n_steps=2)
    record["retry"] = (experiment.experiment_dir, experiment.resumed, steps.ckpt_path)
    manager.fit(batches, epochs=3, callbacks_list=[experiment, steps])
    record["resumed"] = weights(model)

    again = Experiment("retry", recording(make_model()), resume="auto")  # a finished run: the next numbered folder
    record["again"] = (again.experiment_dir, again.resumed)
    result["experiment"] = record


class TwoHeads(torch.nn.Module):
    """A model whose second head never takes part in the output: its parameters get no gradient."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(4, 3)
        self.spare = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def unused_parameters(result: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor]) -> None:
    batches = [(train[0][i : i + BATCH], train[1][i : i + BATCH]) for i in range(0, TRAIN_SIZE, BATCH)]
    errors = {}
    for accumulate in (1, 2):
        try:
            recording(TwoHeads(), accumulate_grad_batches=accumulate).fit(batches, epochs=2)
            errors[accumulate] = "no error"
        except ModelError as error:
            errors[accumulate] = str(error)
    model = TwoHeads()
    manager = recording(model, strategy=DDP(find_unused_parameters=True))
    manager.fit(batches, epochs=2)
    result["unused"] = {"errors": errors, "seen": manager.seen, "weights": weights(model)}


def host_collectives(result: dict[str, Any]) -> None:
    """The host-side collectives with values of a size of each rank's own, and what the exit waits for afterwards."""
    distributed.init_from_environment()  # as `fit` starts it
    rank, world = distributed.get_rank(), distributed.get_world_size()
    own = {"rank": rank, "text": "x" * (1000 * rank + 1), "tensor": torch.arange(rank + 2.0)}
    buffers = [torch.full((3,), float(rank)), torch.tensor([rank], dtype=torch.int64)]
    distributed.broadcast_tensors(buffers)
    failure = ValueError("disk full") if rank == 0 else None

    def fail_on_main() -> None:
        if failure is not None:
            raise failure

    error = distributed.on_main_process(fail_on_main)
    result["collectives"] = {
        "gathered": distributed.gather_objects(own),
        "from_main": distributed.from_main_process(own),
        "on_main_error": (type(error).__name__, str(error)),
        "agreed_alike": distributed.agree_on(["same", 1]),
        "agreed_apart": distributed.agree_on(own),
        "flags": distributed.all_flags(rank == world - 1),
        "max": distributed.max_over_processes([rank, -rank]),
        "started_max": distributed.start_max_over_processes([rank * 10])(),
        "buffers": buffers,
    }
    handed = list(distributed._handed)  # what the exit waits for: (tensor, its C++ users before the collective)
    left = distributed._wait_for_hand_backs()
    result["collectives"].update(
        handed=len(handed),
        still_held_at_exit=left,
        users_after_wait=[tensor._use_count() - users for tensor, users in handed],  # 0: the backend let go
    )


def main(out: Path) -> None:
    os.chdir(out)
    rank = int(os.environ["RANK"])
    train, val = make_data(TRAIN_SIZE, 1), make_data(12, 2)
    stream_train, stream_val = make_data(STREAM_CHUNKS * CHUNK, 3), make_data(STREAM_VAL_CHUNKS * CHUNK, 4)
    if rank == 0:
        torch.save(
            {
                "train": train,
                "val": val,
                "stream_train": stream_train,
                "stream_val": stream_val,
                "initial": weights(make_model()),
                "eval": {n: make_data(n, 10 + n) for n, _ in EVAL_SIZES},
            },
            out / "inputs.pt",
        )
    result: dict[str, Any] = {"test": {}, "user": {}}
    for case in (
        lambda: host_collectives(result),
        lambda: reductions(result),
        lambda: frozen(result),
        lambda: user_samplers(result, train, val),
        lambda: streams(result, stream_train, stream_val),
        lambda: loader_processes(result, train, val),
        lambda: experiment_retry(result, train),
        lambda: unused_parameters(result, train),  # last: DDP's error leaves its reducer mid-step
    ):
        case()
        torch.save(result, out / f"rank{rank}.pt")  # what ran so far, should a later case fail


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
