"""The rows of the overhead table: which runs each row compares, and what it notes besides the ratio.

Who owns what: a row builds its contenders from `bench_loops` (a raw loop and `Manager.fit`, plus
extra runs that explain the difference), times them with `bench_timing.interleaved_medians`, and
returns a `RowResult`; `overhead.py` picks the rows and prints them.
"""

from __future__ import annotations

import copy
import itertools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from bench_loops import WORKLOADS, ours_fit, raw_fit, seeded_start
from bench_timing import interleaved_medians

import torchmanager
from torchmanager.callbacks import Callback, LastCheckpoint, TensorBoard
from torchmanager_core.callbacks import CallbackList

__all__ = ["ROWS", "RowResult", "Settings"]

BATCH_HOOKS = ("on_batch_start", "on_batch_end")


@dataclass(frozen=True)
class Settings:
    """How much work each run does and how often it is timed."""

    rounds: int
    warmup: int
    epochs: int
    steps: int
    steps_b: int
    ckpt_every: int


@dataclass
class RowResult:
    """Median seconds of the raw loop and of ours, for `steps` training steps per run, and notes."""

    label: str
    raw_s: float
    ours_s: float
    steps: int
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.ours_s / self.raw_s

    @property
    def overhead_us(self) -> float:
        """Ours minus raw per training step, in microseconds."""
        return (self.ours_s - self.raw_s) / self.steps * 1e6


def _per_step_us(seconds: float, settings: Settings) -> float:
    return seconds / (settings.epochs * settings.steps) * 1e6


def plain_row(key: str) -> Callable[[Settings], RowResult]:
    """Raw loop against `Manager.fit` on workload `key`, nothing attached."""

    def row(s: Settings) -> RowResult:
        steps = s.steps_b if key == "B" else s.steps
        initial, batches = seeded_start(WORKLOADS[key], steps)
        copied = WORKLOADS[key].copied_step
        times = interleaved_medians(
            {
                "raw": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs),
                "ours": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs, copied_step=copied),
            },
            s.rounds,
            s.warmup,
        )
        return RowResult(WORKLOADS[key].name, times["raw"], times["ours"], s.epochs * steps)

    return row


def _hooks_in_use(callbacks: Sequence[Callback], hooks: Sequence[str]) -> list[str]:
    """`Class.hook` for each callback the loop would call at one of `hooks`."""
    return [f"{type(c).__name__}.{hook}" for c in callbacks for hook in hooks if CallbackList([c]).uses(hook)]


def callbacks_row(s: Settings) -> RowResult:
    """A with a per-epoch `LastCheckpoint` and a `TensorBoard` attached, against the raw loop (which saves nothing)."""
    initial, batches = seeded_start(WORKLOADS["A"], s.steps)
    with tempfile.TemporaryDirectory() as folder:
        runs = itertools.count()

        def attach(manager: torchmanager.Manager) -> list[Callback]:
            run = next(runs)  # a log folder per run, as separate experiments would have
            return [
                LastCheckpoint(manager, os.path.join(folder, "last.model")),
                TensorBoard(os.path.join(folder, f"tb{run}")),
            ]

        times = interleaved_medians(
            {
                "raw": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs),
                "ours": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs),
                "ours+callbacks": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs, callbacks=attach),
            },
            s.rounds,
            s.warmup,
        )
        model = copy.deepcopy(initial)
        probe = attach(torchmanager.Manager(model, torch.optim.SGD(model.parameters(), lr=0.01)))
        per_batch = _hooks_in_use(probe, BATCH_HOOKS)
        for callback in probe:
            getattr(callback, "close", lambda: None)()
    extra = times["ours+callbacks"] - times["ours"]
    notes = [
        f"callbacks over plain ours: {extra * 1e3:+.2f} ms per run of {s.epochs} epochs (a save and a TensorBoard write "
        f"per epoch, the writer made once), {_per_step_us(extra, s):+.1f} us/step amortised",
        f"per-batch hooks the loop calls: {', '.join(per_batch) or 'none'}",
    ]
    if per_batch:
        notes.append("SUSPICIOUS: per-epoch callbacks are called after every batch")
    return RowResult(
        "A + LastCheckpoint/epoch + TensorBoard", times["raw"], times["ours+callbacks"], s.epochs * s.steps, notes
    )


def bf16_row(s: Settings) -> RowResult:
    """A with `precision="bf16"` against the raw loop under `torch.autocast("cpu", dtype=torch.bfloat16)`."""
    initial, batches = seeded_start(WORKLOADS["A"], s.steps)
    times = interleaved_medians(
        {
            "raw": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs, autocast=torch.bfloat16),
            "ours": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs, precision="bf16"),
        },
        s.rounds,
        s.warmup,
    )
    return RowResult("A bf16 (autocast both sides)", times["raw"], times["ours"], s.epochs * s.steps)


class _ModelProbe(Callback):
    """Records the class of `manager.model` when training starts (DDP-wrapped or not)."""

    def __init__(self, manager: torchmanager.Manager) -> None:
        super().__init__()
        self.manager = manager
        self.model_class = ""

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self.model_class = type(self.manager.model).__name__


def distributed_row(s: Settings) -> RowResult:
    """A inside a gloo process group of world size 1, against the raw loop; raw `DDP(model)` alongside."""
    initial, batches = seeded_start(WORKLOADS["A"], s.steps)
    probes: list[_ModelProbe] = []

    def probe(manager: torchmanager.Manager) -> list[Any]:
        probes.append(_ModelProbe(manager))
        return probes[-1:]

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", store=dist.FileStore(os.path.join(folder, "store"), 1), rank=0, world_size=1)
        try:
            times = interleaved_medians(
                {
                    "raw": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs),
                    "ours": lambda: ours_fit(copy.deepcopy(initial), batches, s.epochs),
                    "raw DDP": lambda: raw_fit(copy.deepcopy(initial), batches, s.epochs, ddp=True),
                },
                s.rounds,
                s.warmup,
            )
            ours_fit(copy.deepcopy(initial), batches, s.epochs, callbacks=probe)
        finally:
            dist.destroy_process_group()
    wrapped = probes[0].model_class
    notes = [
        f"world size 1: the manager trains `{wrapped}` (it wraps in DDP only when world size > 1)",
        f"raw DDP(model) at world size 1 vs raw: ratio {times['raw DDP'] / times['raw']:.3f}, "
        f"{_per_step_us(times['raw DDP'] - times['raw'], s):+.1f} us/step (what the wrap would cost)",
    ]
    if wrapped == "DistributedDataParallel":
        notes.append("SUSPICIOUS: the manager wrapped the model in DDP at world size 1")
    return RowResult("A in a gloo group, world size 1", times["raw"], times["ours"], s.epochs * s.steps, notes)


ROWS: dict[str, Callable[[Settings], RowResult]] = {
    "A": plain_row("A"),
    "B": plain_row("B"),
    "S": plain_row("S"),
    "P": plain_row("P"),
    "callbacks": callbacks_row,
    "bf16": bf16_row,
    "dist": distributed_row,
}
"""Row keys for `--rows`, in table order."""
