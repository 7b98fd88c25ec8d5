"""The torchrun row of the overhead table (issue 22 point 4): what agreeing on stopping costs a step.

Under torchrun, when a preemption signal is noted or a hook may stop inside an epoch, every process
agrees after each batch whether to stop (a collective on the host, started at one batch and read at
a later one: `loop.dispatch`). The row times, in one launch of 2 CPU processes (gloo), in rotating
rounds:

  raw DDP      a hand loop over `DistributedDataParallel(model)` on this process's share (workload A)
  agreement    `Manager.fit` on the same batches with a batch callback (so the plan agrees each step)
  no agreement the same `fit` with the plan's agreement switched off (what a step would cost without
               it; only this benchmark can switch it off: stopping would then not be agreed)

Run alone: `python benchmarks/bench_torchrun.py [--rounds 5] [--steps 200]`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from bench_loops import WORKLOADS, make_batches, ours_fit, raw_fit
from bench_rows import RowResult, Settings
from bench_timing import two_process_medians

from torchmanager.callbacks import Callback

__all__ = ["ROWS", "torchrun_row"]

MODES = ("raw DDP", "agreement", "no agreement")


def torchrun_row(s: Settings) -> RowResult:
    """Workload A on 2 processes under torchrun with a batch callback: raw DDP against ours, agreement on and off."""
    times = two_process_medians(__file__, "--rounds", str(s.rounds), "--epochs", str(s.epochs), "--steps", str(s.steps))
    steps = s.epochs * s.steps
    cost = (times["agreement"] - times["no agreement"]) / steps * 1e6
    notes = [
        f"agreement off: ratio {times['no agreement'] / times['raw DDP']:.3f}; the agreement costs "
        f"{cost:+.1f} us a step (ours with it {times['agreement']:.3f} s, without {times['no agreement']:.3f} s)",
        "each process trains its share: the steps counted are one process's",
    ]
    label = "A, 2 procs (torchrun, gloo), batch callback"
    return RowResult(label, times["raw DDP"], times["agreement"], steps, notes)


class _BatchCallback(Callback):
    """A callback with a batch hook (so `fit` may stop inside an epoch and the processes agree each step)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_batch_end(self, batch: int, summary: dict[str, float] | None = None) -> None:
        self.batches += 1


@contextmanager
def _agreement_off() -> Iterator[None]:
    """Plans made inside take no agreement step (a benchmark-only switch: the cost of the agreement itself)."""
    from torchmanager_core.loop import fit

    original = fit.plan_fit
    fit.plan_fit = lambda *args, **kwargs: dataclasses.replace(original(*args, **kwargs), agree_each_step=False)
    try:
        yield
    finally:
        fit.plan_fit = original


def _worker(folder: str, rounds: int, epochs: int, steps: int) -> None:
    """One process of the launch: the three runs in rotating order, median seconds to `times.json` (rank 0)."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(0)
    initial = WORKLOADS["A"].make_model()
    whole = make_batches(WORKLOADS["A"].input_shape, steps * world)  # the same on every process (seed 0)
    share = whole[rank::world]  # what the manager deals this process out of `whole`

    def callbacks(manager: object) -> list[Callback]:
        return [_BatchCallback()]

    def ours(agree: bool) -> None:
        if agree:
            ours_fit(copy.deepcopy(initial), whole, epochs, callbacks=callbacks)
        else:
            with _agreement_off():
                ours_fit(copy.deepcopy(initial), whole, epochs, callbacks=callbacks)

    runs: dict[str, Callable[[], object]] = {
        "raw DDP": lambda: raw_fit(copy.deepcopy(initial), share, epochs, ddp=True),
        "agreement": lambda: ours(True),
        "no agreement": lambda: ours(False),
    }
    for run in runs.values():
        run()  # warm-up
    seen: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:
            torch.distributed.barrier()
            start = time.perf_counter()
            runs[mode]()
            seen[mode].append(time.perf_counter() - start)
    if rank == 0:
        Path(folder, "times.json").write_text(json.dumps({mode: statistics.median(v) for mode, v in seen.items()}))
    torch.distributed.destroy_process_group()


ROWS: dict[str, Callable[[Settings], RowResult]] = {"torchrun": torchrun_row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--worker", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.rounds, args.epochs, args.steps)
        return
    result = torchrun_row(Settings(args.rounds, 1, args.epochs, args.steps, max(1, args.steps // 4), 50))
    print(f"{result.label}: raw DDP {result.raw_s:.3f} s, ours {result.ours_s:.3f} s, ratio {result.ratio:.3f}")
    print("\n".join(f"    {note}" for note in result.notes))


if __name__ == "__main__":
    main()
