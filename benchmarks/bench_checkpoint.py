"""Checkpoint rows of the overhead table (issue 22 point 5, issue 24): what saving during `fit` costs a step.

Rows (each a function of `bench_rows.Settings` returning a `RowResult`, as `bench_rows.ROWS`; `overhead.py`
takes them with `ROWS.update(bench_checkpoint.ROWS)`):

  ckpt-background  workload A, `LastCheckpoint(save_every_n_steps=N)` written in the background, against
                   the raw loop; its notes give the synchronous save and no save of the same run, timed
                   in the same rounds (N = `--ckpt-every`, 50 by default)
  fsdp-async       FSDP2 through the Manager on 2 CPU processes (torchrun, gloo): a sharded
                   `LastCheckpoint(save_every_n_steps=10, background=True)` against no checkpoint, and a
                   synchronous one, timed in the same rounds in one launch (the "raw" column is no
                   checkpoint: the ratio is the checkpoints' cost)

Run alone: `python benchmarks/bench_checkpoint.py [--rows ckpt-background fsdp-async] [--rounds 5] [--steps 200]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_loops import WORKLOADS, ours_fit, raw_fit, seeded_start
from bench_rows import RowResult, Settings
from bench_timing import interleaved_medians, two_process_medians

import torchmanager
from torchmanager.callbacks import Callback, LastCheckpoint

__all__ = ["ROWS", "background_row", "fsdp_async_row"]

FSDP_EVERY = 10
"""The issue's asynchronous FSDP2 checkpoint: one every 10 updates."""


def background_row(s: Settings) -> RowResult:
    """A with step checkpoints every `s.ckpt_every` updates, written in the background, against the raw loop."""
    initial, batches = seeded_start(WORKLOADS["A"], s.steps)
    with tempfile.TemporaryDirectory() as folder:

        def saving(background: bool) -> Callable[[torchmanager.Manager], list[Callback]]:
            path = os.path.join(folder, f"{'background' if background else 'sync'}.model")
            return lambda manager: [
                LastCheckpoint(manager, path, save_every_n_steps=s.ckpt_every, background=background)
            ]

        times = interleaved_medians(
            {
                "raw": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs),
                "none": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs),
                "sync": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs, callbacks=saving(False)),
                "background": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs, callbacks=saving(True)),
            },
            s.rounds,
            s.warmup,
        )
        size_kb = os.path.getsize(os.path.join(folder, "sync.model")) / 1024
    saves = s.epochs * s.steps // s.ckpt_every + s.epochs  # the step saves and one at each epoch's end
    notes = [
        f"{saves} saves a run of {size_kb:.0f} KB: against no checkpoint, synchronous {times['sync'] / times['none']:.3f}x "
        f"({(times['sync'] - times['none']) / saves * 1e3:.2f} ms a save), in the background "
        f"{times['background'] / times['none']:.3f}x ({(times['background'] - times['none']) / saves * 1e3:.2f} ms a save)",
    ]
    label = f"A + LastCheckpoint every {s.ckpt_every} steps, background"
    return RowResult(label, times["raw"], times["background"], s.epochs * s.steps, notes)


def fsdp_async_row(s: Settings) -> RowResult:
    """FSDP2 on 2 CPU processes: asynchronous sharded checkpoints every 10 updates against none (one torchrun launch)."""
    times = two_process_medians(__file__, "--rounds", str(s.rounds), "--steps", str(s.steps))
    notes = [
        f"{s.steps // FSDP_EVERY} saves a run; synchronous sharded saves {times['sync'] / times['none']:.3f}x no checkpoint; "
        "the raw column is FSDP2 through the Manager without a checkpoint"
    ]
    label = f"FSDP2 (2 procs, gloo) + async sharded every {FSDP_EVERY} steps"
    return RowResult(label, times["none"], times["async"], s.steps, notes)


def _fsdp_worker(folder: str, rounds: int, steps: int) -> None:
    """One process of the `fsdp-async` launch: the three runs in rotating order, median seconds to `times.json`."""
    from torchmanager_core import distributed
    from torchmanager_core.strategy.fsdp import FSDP2Strategy

    distributed.init_from_environment()
    torch.manual_seed(0)
    batches = [(torch.randn(64, 64), torch.randint(0, 10, (64,))) for _ in range(steps)]

    def run(mode: str) -> float:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
        manager = torchmanager.Manager(
            model,
            lambda params: torch.optim.Adam(params, lr=1e-3),
            torch.nn.CrossEntropyLoss(),
            strategy=FSDP2Strategy(),
        )
        callbacks: list[Callback] = []
        if mode != "none":
            path = os.path.join(folder, f"{mode}.ckpt")
            callbacks.append(
                LastCheckpoint(manager, path, freq=1000, save_every_n_steps=FSDP_EVERY, background=mode == "async")
            )
        torch.distributed.barrier()
        start = time.perf_counter()
        manager.fit(batches, epochs=1, callbacks_list=callbacks, show_verbose=False)  # waits for the last write
        return time.perf_counter() - start

    modes = ["none", "async", "sync"]
    run("none")  # warm-up
    seen: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        for mode in modes[round_ % 3 :] + modes[: round_ % 3]:
            seen[mode].append(run(mode))
    medians = {mode: statistics.median(values) for mode, values in seen.items()}
    if torch.distributed.get_rank() == 0:
        Path(folder, "times.json").write_text(json.dumps(medians))


ROWS: dict[str, Callable[[Settings], RowResult]] = {"ckpt-background": background_row, "fsdp-async": fsdp_async_row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=sorted(ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ckpt-every", type=int, default=50)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _fsdp_worker(args.worker, args.rounds, args.steps)
        return
    import logging

    logging.getLogger("torchmanager").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    settings = Settings(args.rounds, 1, args.epochs, args.steps, args.steps, args.ckpt_every)
    for name in args.rows:
        result = ROWS[name](settings)
        print(
            f"{result.label:<58} ratio {result.ratio:.3f}  ours {result.ours_s * 1e3:8.1f} ms  "
            f"raw {result.raw_s * 1e3:8.1f} ms  {result.overhead_us:+.1f} us/step"
        )
        for note in result.notes:
            print(f"    {note}")


if __name__ == "__main__":
    main()
