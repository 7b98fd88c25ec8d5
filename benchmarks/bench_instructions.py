"""Instructions per training step, counted by callgrind: the hand-written loop against `Manager.fit`.

Wall time on shared machines swings by 20% between rounds; the instructions a step executes do
not. Each contender of a row runs in a process of its own (the two side by side) under
`valgrind --tool=callgrind --instr-atstart=no` (this file with `--child`): it builds the row's
model and batches, trains one uncounted warm-up epoch (lazy imports, first-call caches, the
interpreter's specialisation), then for each epoch count E trains a fresh copy of the model with
counting switched on only around the training itself (the hand loop's epochs, or `Manager.fit`;
see `measure=` in `bench_loops`) and dumps that count. The parent reads the dumps:

    per step = (count(E2) - count(E1)) / ((E2 - E1) * steps)

so what a run does once (building the optimizer's state, `fit`'s checks and set-up) cancels, and
what it does per epoch (resets, reading the epoch's floats, the summary line) is spread over the
epoch's steps, as in a real run. A repeated run counts the same to within a few hundred
instructions; a later epoch of one run costs a little more than an earlier one (malloc's heap
grows: about 0.3% per step between 1->2 and 2->3 epochs on row S).

Who owns what: `bench_callgrind` talks to valgrind, `bench_loops` says what a run trains, this
module runs the contenders and computes per-step counts; `overhead.py` prints them.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bench_callgrind as callgrind

__all__ = ["CONTENDERS", "InstructionCounts", "count_row"]

CONTENDERS = ("raw", "ours")
"""The hand-written loop and `Manager.fit`, as in the wall-time table."""


@dataclass(frozen=True)
class InstructionCounts:
    """The instructions each contender's training run executed, by epoch count, for `steps` steps per epoch."""

    key: str
    steps: int
    counts: dict[str, dict[int, int]]  # contender -> epochs -> instructions

    def per_step(self, contender: str, first: int | None = None, last: int | None = None) -> float:
        """(count(last) - count(first)) / ((last - first) * steps): by default from the fewest epochs to the most."""
        runs = self.counts[contender]
        first = min(runs) if first is None else first
        last = max(runs) if last is None else last
        return (runs[last] - runs[first]) / ((last - first) * self.steps)

    @property
    def ratio(self) -> float:
        """Ours over the hand loop, per step."""
        return self.per_step("ours") / self.per_step("raw")

    @property
    def framework(self) -> float:
        """Ours minus the hand loop, instructions per step."""
        return self.per_step("ours") - self.per_step("raw")


def count_row(key: str, steps: int, epochs: Sequence[int], timeout_s: float = 1800) -> InstructionCounts:
    """Count the training runs of row `key` (a key of `bench_loops.WORKLOADS`) under callgrind.

    Args:
        key: The workload.
        steps: Batches per epoch.
        epochs: The epoch counts to run (at least two, distinct, each >= 1).
        timeout_s: The limit for each contender's process, in seconds (`subprocess.TimeoutExpired` past it).
    Raises:
        RuntimeError: valgrind is missing, or a contender's process failed (its output is in the message).
    """
    if len(set(epochs)) < 2 or min(epochs) < 1:
        raise ValueError(f"`epochs` must hold at least two distinct counts >= 1. Received: epochs={list(epochs)!r}")
    reason = callgrind.valgrind_missing()
    if reason:
        raise RuntimeError(f"Cannot count instructions: {reason}.")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    counts: dict[str, dict[int, int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        out_files = {contender: Path(folder) / f"{contender}.callgrind.out" for contender in CONTENDERS}
        children = {  # the contenders run side by side: a count does not depend on the machine's load
            contender: subprocess.Popen(
                [
                    *callgrind.callgrind_command(out_file),
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    key,
                    contender,
                    str(steps),
                    *map(str, epochs),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            for contender, out_file in out_files.items()
        }
        try:
            for contender, child in children.items():
                output, _ = child.communicate(timeout=timeout_s)
                if child.returncode != 0:
                    raise RuntimeError(
                        f"The callgrind run of row {key}, {contender}, failed with status {child.returncode}:\n{output[-4000:]}"
                    )
                dumps = callgrind.read_dumps(out_files[contender])
                counts[contender] = {e: dumps[_label(contender, e)] for e in epochs}
        finally:  # one failed or ran out of time: end the other before its folder goes
            for child in children.values():
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return InstructionCounts(key, steps, counts)


def _label(contender: str, epochs: int) -> str:
    return f"{contender} epochs={epochs}"


@contextmanager
def _counted(label: str) -> Iterator[None]:
    gc.collect()  # every run starts from the same heap: no collection of the previous run's garbage
    callgrind.start_instrumentation()
    try:
        yield
    finally:
        callgrind.stop_instrumentation()
        callgrind.dump_stats(label)


def _child(key: str, contender: str, steps: int, epochs: Sequence[int]) -> None:
    """Under callgrind: one uncounted warm-up epoch, then a counted run for each epoch count."""
    import torch
    from bench_loops import WORKLOADS, ours_fit, raw_fit, seeded_start

    if not callgrind.running_on_valgrind():
        raise SystemExit("`--child` counts instructions: run it under valgrind --tool=callgrind (see `count_row`).")
    torch.set_num_threads(1)
    logging.getLogger("torchmanager").setLevel(logging.WARNING)
    initial, batches = seeded_start(WORKLOADS[key], steps)
    fit: Callable[..., object] = (
        raw_fit if contender == "raw" else functools.partial(ours_fit, copied_step=WORKLOADS[key].copied_step)
    )
    fit(copy.deepcopy(initial), batches, 1)
    for count in epochs:
        fit(copy.deepcopy(initial), batches, count, measure=lambda count=count: _counted(_label(contender, count)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The process `count_row` runs under callgrind.")
    parser.add_argument("--child", nargs="+", required=True, metavar="KEY CONTENDER STEPS EPOCHS")
    key, contender, steps, *epochs = parser.parse_args().child
    _child(key, contender, int(steps), [int(e) for e in epochs])
