"""Data and checkpoint costs (issue 22 points 2 and 5, issue 20 kind 7): `python benchmarks/bench_data.py`.

Rows:
- resume: seconds to the first batch of a pass that starts at 5% and 95% of an epoch (2 ms items,
  batches of 10, 100 batches, shuffled), replaying (draw and drop, as the loop does today) and with
  `data_position.resume_iterator`, against a fresh start; 0 and 2 loader processes.
- checkpoints: workload A (MLP 64-256-10, batch 128) trained by a hand loop, saving model and
  optimizer every 50 steps with `checkpoint.save` or `checkpoint.BackgroundWriter`, against no save.
- loader processes: the first batch of each of 5 epochs and the whole run, for processes forked
  every epoch, forked once (`persistent_workers`), and started by a fork server.
- item seeds: microseconds an item pays for per-item random seeds (loaded in this process).
Each figure is the median of interleaved rounds (`bench_timing.interleaved_medians`).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from bench_loops import WORKLOADS, seeded_start
from bench_timing import interleaved_medians, machine_facts

from torchmanager_core import checkpoint
from torchmanager_core.data_position import resume_iterator, samples_done, set_epoch
from torchmanager_data import Dataset


class SlowItems(Dataset[Any]):
    """`length` items that take `delay` seconds each to load (a read from disk, a decode)."""

    def __init__(self, length: int, delay: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.length, self.delay = length, delay

    @property
    def unbatched_len(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)
        return torch.full((8,), float(index)), torch.tensor(index % 10)


def first_batch_seconds(workers: int, batches_done: int, how: str) -> float:
    """Seconds from the start of a pass to its first new batch, `batches_done` batches into the epoch."""
    data = SlowItems(1000, 0.002, 10, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    set_epoch(data, 0)
    start = time.perf_counter()
    if how == "resume":
        position = samples_done(data, batches_done)
        assert position is not None
        rest = resume_iterator(data, position)
        assert rest is not None
        next(rest)
    else:
        iterator = iter(data)
        for _ in range(batches_done + 1):
            next(iterator)
    return time.perf_counter() - start


def resume_rows(rounds: int) -> list[str]:
    lines = ["resume: seconds to the first new batch (1000 items of 2 ms, batches of 10)"]
    for workers in (0, 2):
        contenders: dict[str, Callable[[], object]] = {
            "fresh start": lambda workers=workers: first_batch_seconds(workers, 0, "replay")
        }
        for share, done in (("5%", 5), ("95%", 95)):
            for how in ("replay", "resume"):
                contenders[f"{how} at {share}"] = lambda workers=workers, done=done, how=how: first_batch_seconds(
                    workers, done, how
                )
        times = interleaved_medians(contenders, rounds, warmup=1)
        fresh = times["fresh start"]
        cells = ", ".join(f"{name} {seconds:.3f} s ({seconds / fresh:.1f}x)" for name, seconds in times.items())
        lines.append(f"  {workers} loader processes: {cells}")
    return lines


def checkpoint_rows(rounds: int, steps: int, every: int) -> list[str]:
    model0, batches = seeded_start(WORKLOADS["A"], steps)
    folder = tempfile.mkdtemp(prefix="bench-data-")
    path = os.path.join(folder, "last.model")
    blocked: dict[str, list[float]] = {"sync": [], "background": []}

    def train(save: str) -> None:
        model = copy.deepcopy(model0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        writer = checkpoint.BackgroundWriter()
        for step, (x, y) in enumerate(batches, 1):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if save != "none" and step % every == 0:
                payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
                began = time.perf_counter()
                if save == "sync":
                    checkpoint.save(payload, path)
                else:
                    writer.submit(payload, path)
                blocked[save].append(time.perf_counter() - began)
        writer.close()

    times = interleaved_medians(
        {name: lambda name=name: train(name) for name in ("none", "sync", "background")}, rounds
    )
    lines = [f"checkpoints: workload A, {steps} steps, a save every {every} steps ({steps // every} saves a run)"]
    for name in ("sync", "background"):
        median_ms = statistics.median(blocked[name]) * 1e3
        lines.append(
            f"  {name}: the step waits {median_ms:.2f} ms a save (median); run {times[name]:.3f} s against "
            f"{times['none']:.3f} s without saves ({times[name] / times['none']:.3f}x)"
        )
    return lines


def worker_rows(epochs: int) -> list[str]:
    lines = [f"loader processes: 2 workers, {epochs} epochs of 20 batches (first batch of each epoch, then the run)"]
    for name, options in (
        ("forked every epoch", {"persistent_workers": False}),
        ("forked once", {"persistent_workers": True}),
        ("fork server, started once", {"persistent_workers": True, "multiprocessing_context": "forkserver"}),
        ("fork server, every epoch", {"persistent_workers": False, "multiprocessing_context": "forkserver"}),
    ):
        data = SlowItems(2000, 0.0, 100, num_workers=2, **options)
        firsts = []
        start = time.perf_counter()
        for epoch in range(epochs):
            set_epoch(data, epoch)
            began = time.perf_counter()
            iterator = iter(data)
            next(iterator)
            firsts.append(time.perf_counter() - began)
            for _ in iterator:
                pass
        total = time.perf_counter() - start
        cells = " ".join(f"{seconds:.3f}" for seconds in firsts)
        lines.append(f"  {name}: first batches {cells} s; run {total:.2f} s")
        del data
    return lines


def item_seed_rows(rounds: int) -> list[str]:
    class Unseeded(SlowItems):
        seed_items = False

    items = 5000

    def run(kind: type[SlowItems]) -> None:
        for _ in kind(items, 0.0, 100, num_workers=0):
            pass

    times = interleaved_medians({"seeded": lambda: run(SlowItems), "unseeded": lambda: run(Unseeded)}, rounds)
    cost = (times["seeded"] - times["unseeded"]) / items * 1e6
    return [
        f"item seeds: {cost:.1f} us an item ({times['seeded']:.3f} s against {times['unseeded']:.3f} s for {items} items)"
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--only", choices=("resume", "checkpoints", "workers", "seeds"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(machine_facts()))
    sections: dict[str, Callable[[], list[str]]] = {
        "resume": lambda: resume_rows(args.rounds),
        "checkpoints": lambda: checkpoint_rows(args.rounds, args.steps, args.every),
        "workers": lambda: worker_rows(5),
        "seeds": lambda: item_seed_rows(args.rounds),
    }
    for name, section in sections.items():
        if args.only in (None, name):
            print("\n".join(section()), flush=True)


if __name__ == "__main__":
    main()
