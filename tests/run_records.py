"""What the resume tests compare: tensors bit for bit, and what a job trained over all its starts.

Shared by tests/test_kill_and_resume.py, tests/test_preemption_processes.py, tests/test_torchrun_restarts.py
and tests/test_checkpoint_disk_errors.py. The trained batches come from the `seen-rank{R}-start{S}.txt` files
that tests/scripts/preempt_train.py writes (a line `epoch batch global_step id...` per training batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

Step = tuple[int, int, int, tuple[int, ...]]
"""A trained batch: (epoch, batch index, optimizer updates before it, the sample ids)."""


def assert_same_tensors(expected: Any, actual: Any, where: str) -> None:
    """Every tensor bit-identical (torch.equal), and every other value equal, in nested dicts and lists."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and expected.dtype == actual.dtype, where
        assert torch.equal(expected, actual), f"{where} differs by up to {(expected - actual).abs().max()}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), where
        for key in expected:
            assert_same_tensors(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), where
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            assert_same_tensors(a, b, f"{where}[{index}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def started(folder: Path, rank: int = 0) -> list[list[Step]]:
    """The batches each start of the job trained on rank `rank`, in the order of the starts."""
    files = sorted((int(path.stem.rsplit("start", 1)[1]), path) for path in folder.glob(f"seen-rank{rank}-start*.txt"))
    starts = []
    for _, path in files:
        steps = []
        for line in path.read_text().splitlines():
            epoch, batch, updates, *ids = (int(word) for word in line.split())
            steps.append((epoch, batch, updates, tuple(ids)))
        starts.append(steps)
    return starts


def trajectory(folder: Path, rank: int = 0) -> list[Step]:
    """What the run trained on rank `rank`, counting each batch where it finally counted: a start that resumed
    replaces the batches earlier starts trained from its first batch on (they were lost with the process)."""
    steps: list[Step] = []
    for start in started(folder, rank):
        if start:
            steps = [step for step in steps if step[:2] < start[0][:2]]
        steps += start
    return steps
