"""Overhead of `Manager.fit` against a hand-written PyTorch loop doing the same work.

Both sides train the same model from the same initial weights on the same batches in the same
order, with SGD, cross-entropy and an accuracy accumulated as a tensor, reading Python floats once
per epoch. Rounds alternate raw/ours in one process, single-threaded, and the medians are
compared. Workload A (a 64-256-10 MLP, batch 128) is dominated by per-step overhead; workload B (a
small CNN) by compute.

Usage: hatch run bench [--rounds 7] [--epochs 3] [--steps 200] [--workload A B]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import torchmanager

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Workload:
    name: str
    make_model: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]


WORKLOADS = {
    "A": Workload("A: MLP 64-256-10", lambda: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)), (64,)),
    "B": Workload("B: CNN 1-32-64", lambda: torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(64 * 8 * 8, 10)), (1, 8, 8)),
}


def make_batches(shape: tuple[int, ...], steps: int, batch_size: int = 128) -> Batches:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, *shape, generator=gen), torch.randint(0, 10, (batch_size,), generator=gen))
            for _ in range(steps)]


def raw_fit(model: torch.nn.Module, batches: Batches, epochs: int) -> list[tuple[float, float]]:
    """The loop a user would write by hand, with the same summary work as ours."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    history = []
    model.train()
    for _ in range(epochs):
        loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
        for x, y in batches:
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(-1) == y).sum()
            seen += len(y)
        history.append((loss_sum.item() / seen, correct.item() / seen))
    return history


def ours_fit(model: torch.nn.Module, batches: Batches, epochs: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    manager = torchmanager.Manager(model, optimizer, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics)
    manager.fit(batches, epochs=epochs, show_verbose=False, device=torch.device("cpu"))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(workload: Workload, rounds: int, epochs: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    initial = workload.make_model()
    batches = make_batches(workload.input_shape, steps)
    raw_times, our_times = [], []
    for _ in range(rounds):
        raw_times.append(timed(lambda: raw_fit(copy.deepcopy(initial), batches, epochs)))
        our_times.append(timed(lambda: ours_fit(copy.deepcopy(initial), batches, epochs)))
    raw, ours = statistics.median(raw_times), statistics.median(our_times)
    return {"raw_s": raw, "ours_s": ours, "ratio": ours / raw, "overhead_us_per_step": (ours - raw) / (epochs * steps) * 1e6}


def import_time(statement: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="batches per epoch")
    parser.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, torchmanager {torchmanager.__version__}, 1 thread, "
          f"{args.rounds} rounds x {args.epochs} epochs x {args.steps} steps of batch 128")
    print(f"{'workload':<20} {'raw (s)':>9} {'ours (s)':>9} {'ratio':>7} {'overhead/step':>14}")
    for key in args.workload:
        r = bench(WORKLOADS[key], args.rounds, args.epochs, args.steps)
        print(f"{WORKLOADS[key].name:<20} {r['raw_s']:>9.3f} {r['ours_s']:>9.3f} {r['ratio']:>7.3f} "
              f"{r['overhead_us_per_step']:>11.1f} us")
    base = import_time("import torch")
    full = import_time("import torch, torchmanager")
    print(f"import torchmanager over import torch: {(full - base) * 1e3:.0f} ms (median of 5 fresh processes)")


if __name__ == "__main__":
    main()
