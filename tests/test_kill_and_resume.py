"""Exact resume after a real kill: the digits job dies by SIGKILL mid-run, a new process resumes it
from its last checkpoint with `fit(..., resume_from=path)`, and its final weights, optimizer state
and summary are bit-identical to those of a run that was never interrupted (shuffling and dropout on).

Each run is its own process (tests/scripts/resume_digits.py), a child of a fork server that has
imported torch and nothing more (one kill runs in new interpreters instead, to show that the server
hides nothing). The resumed run starts from other random states, so everything that decides the
rest of the run (weights, optimizer, data order, dropout masks, running metrics) must come from
the checkpoint; a run with other random draws ends elsewhere, so the comparison is not vacuous.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.run_records import assert_same_tensors
from tests.scripts.fork_server import ForkServer, ForkServers
from tests.workspace import ROOT
from torchmanager_core import checkpoint

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "resume_digits.py"
STEPS_PER_EPOCH = 23  # 1,437 training images in batches of 64
EPOCHS = 3
EVERY = 5  # LastCheckpoint(save_every_n_steps=5), and one at every epoch end
TIMEOUT = 300  # seconds for one fresh run: a hang guard, far above a run's time on a loaded machine
HOLD = 6  # an external kill lands within the HOLD steps after its line: the run then waits to be killed


@dataclass(frozen=True)
class Kill:
    """Where a run dies: after training step `at` (counted from 1 across epochs) of `job`."""

    job: str  # "<loader>-<optimizer>"
    at: int
    external: bool = False  # killed by the test at a random moment after it printed step `at` (before `at + HOLD`)
    fresh: bool = False  # each run a new interpreter (`python resume_digits.py ...`) instead of a fork server child

    @property
    def name(self) -> str:
        return f"{self.job}-{'near' if self.external else 'at'}-{self.at}{'-fresh' if self.fresh else ''}"


KILLS = [
    Kill("dataset-sgd", 12),  # inside epoch 1, two steps after a checkpoint
    Kill("dataset-sgd", 24),  # first step of epoch 2: resumes from the epoch-end checkpoint
    Kill("dataset-sgd", 30),  # right after a step checkpoint (nothing to redo)
    Kill("dataset-sgd", 34),  # right before one (redoes four steps)
    Kill("dataset-sgd", 46),  # last step of epoch 2, before its validation and epoch-end checkpoint
    Kill("dataset-sgd", 58),  # inside epoch 3
    Kill("dataset-sgd", 36, external=True),  # a random moment in epoch 2, maybe while a checkpoint is written
    Kill("dataset-sgd", 52, fresh=True),  # epoch 3, in new interpreters: the fork server hides nothing
    Kill("dataloader-adam", 29),  # a torch DataLoader and Adam, mid-epoch 2
    Kill("dataloader-adam", 40, external=True),
]


def expected_checkpoint(at: int) -> int:
    """The global step of the last checkpoint written before a kill after step `at`.

    The loop writes a checkpoint once every callback has had the hook that asked for it: a step's
    after its `on_batch_end` dispatch (so after the kill at that step), the epoch-end one after the
    epoch's last step, so a kill at either comes before it.
    """
    steps = [s for s in range(EVERY, at, EVERY)]
    ends = [e * STEPS_PER_EPOCH for e in range(1, EPOCHS + 1) if e * STEPS_PER_EPOCH < at]
    return max(steps + ends)


@dataclass
class Outcome:
    """What a kill and its resume left behind."""

    killed_rc: int
    last_line: str  # the last `step` line the killed run printed
    ckpt_step: int  # global step of the checkpoint that survived the kill
    temp_files: list[str]  # partial writes the kill interrupted
    resumed_rc: int = 0
    resumed_first_line: str = ""
    final: dict[str, Any] = field(default_factory=dict)


def job_args(data: Path, job: str) -> list[str]:
    loader, optimizer = job.split("-")
    files = [str(data), "last.model", "final.pt"]
    return [*files, "--loader", loader, "--optimizer", optimizer, "--every", str(EVERY), "--epochs", str(EPOCHS)]


def step_lines(lines: list[str]) -> list[str]:
    """The `step <n>` lines of a run's stdout (the log's epoch lines left out)."""
    return [line for line in lines if line.startswith("step ")]


def run_fresh(folder: Path, args: list[str]) -> tuple[int, list[str]]:
    """`ForkServer.run` in a new interpreter: `python resume_digits.py ARGS` (a self-kill only)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=folder
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode, done.stdout.splitlines()


def kill_and_resume(runner: ForkServer | None, folder: Path, data: Path, kill: Kill, delay: float) -> Outcome:
    """Kill the job after step `kill.at` (by itself, or by the test at a random moment), then resume it."""
    folder.mkdir()
    if kill.external:
        # ~2 ms a step: the kill lands near the line, and never after step at + HOLD, where the run waits for it
        args = [*job_args(data, kill.job), "--step-delay", "0.002", "--hold-after", str(kill.at + HOLD)]
        killed_rc, lines = runner.run(folder, args, kill_after=f"step {kill.at}", delay=delay)
    elif runner is None:
        killed_rc, lines = run_fresh(folder, [*job_args(data, kill.job), "--kill-at", str(kill.at)])
    else:
        killed_rc, lines = runner.run(folder, [*job_args(data, kill.job), "--kill-at", str(kill.at)])
    payload = checkpoint.load(folder / "last.model")
    outcome = Outcome(
        killed_rc=killed_rc,
        last_line=step_lines(lines)[-1],
        ckpt_step=payload["epoch"] * STEPS_PER_EPOCH + payload["step"],
        temp_files=sorted(name for name in os.listdir(folder) if name.endswith(".tmp")),
    )
    resume = [*job_args(data, kill.job), "--resume", "--seed", "1234"]
    outcome.resumed_rc, lines = run_fresh(folder, resume) if runner is None else runner.run(folder, resume)
    outcome.resumed_first_line = (step_lines(lines) or [""])[0]
    if outcome.resumed_rc == 0:
        outcome.final = torch.load(folder / "final.pt", weights_only=True)
    return outcome


def reference(runner: ForkServer, folder: Path, data: Path, job: str, *extra: str) -> dict[str, Any]:
    """The uninterrupted run's final model, optimizer and summary."""
    folder.mkdir()
    rc, lines = runner.run(folder, [*job_args(data, job), *extra])
    assert rc == 0, f"see {runner.log}"
    assert step_lines(lines)[-1] == f"step {EPOCHS * STEPS_PER_EPOCH}"
    result: dict[str, Any] = torch.load(folder / "final.pt", weights_only=True)
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    y = torch.as_tensor(digits.target)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    assert len(x_train) == 1437  # STEPS_PER_EPOCH depends on it
    path = tmp_path_factory.mktemp("digits") / "data.pt"
    torch.save({"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}, path)
    return path


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, data: Path
) -> Iterator[tuple[dict[str, Any], dict[str, Outcome]]]:
    """Run the uninterrupted references and every kill and resume on two fork servers (fresh kills beside them)."""
    root = tmp_path_factory.mktemp("runs")
    servers = ForkServers(SCRIPT, root, 2)
    on_a_runner = servers.run
    delays = random.Random(0)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            jobs = sorted({kill.job for kill in KILLS})
            references = {
                job: pool.submit(on_a_runner, reference, root / f"reference-{job}", data, job) for job in jobs
            }
            other_draws = pool.submit(
                on_a_runner, reference, root / "other-draws", data, "dataset-sgd", "--reseed", "1"
            )
            kills = {}
            for kill in sorted(KILLS, key=lambda kill: not kill.fresh):  # the slow fresh ones first
                args = (root / kill.name, data, kill, delays.uniform(0.0, 0.012))
                kills[kill.name] = (
                    pool.submit(kill_and_resume, None, *args)
                    if kill.fresh
                    else pool.submit(on_a_runner, kill_and_resume, *args)
                )
            results = {job: f.result() for job, f in references.items()}
            results["other-draws"] = other_draws.result()
            yield results, {name: f.result() for name, f in kills.items()}
    finally:
        servers.close()


def test_other_random_draws_end_elsewhere(outcomes: tuple[dict[str, Any], dict[str, Outcome]]) -> None:
    """Same initial weights, another data order and other dropout masks: the weights differ, so a
    resume that got the random states wrong could not pass the bit-identical test below."""
    references, _ = outcomes
    expected, other = references["dataset-sgd"]["model"], references["other-draws"]["model"]
    assert expected.keys() == other.keys()
    assert not any(torch.equal(expected[key], other[key]) for key in expected)


@pytest.mark.parametrize("kill", KILLS, ids=lambda kill: kill.name)
def test_a_killed_run_resumes_bit_identical(outcomes: tuple[dict[str, Any], dict[str, Outcome]], kill: Kill) -> None:
    references, results = outcomes
    outcome = results[kill.name]
    assert outcome.killed_rc == -signal.SIGKILL
    if kill.external:  # it ran on for a moment after the line the test read, at most HOLD steps
        assert kill.at <= int(outcome.last_line.split()[1]) <= kill.at + HOLD
        assert expected_checkpoint(kill.at) <= outcome.ckpt_step <= expected_checkpoint(kill.at + HOLD)
    else:
        assert outcome.last_line == f"step {kill.at}"  # nothing ran after the kill
        assert outcome.ckpt_step == expected_checkpoint(kill.at)
        assert outcome.temp_files == []
    assert outcome.resumed_rc == 0
    assert outcome.resumed_first_line == f"step {outcome.ckpt_step + 1}"  # it redid the steps after the checkpoint
    reference_result = references[kill.job]
    assert_same_tensors(reference_result["model"], outcome.final["model"], "model")
    assert_same_tensors(reference_result["optimizer"], outcome.final["optimizer"], "optimizer")
    assert outcome.final["summary"] == reference_result["summary"]  # the interrupted epoch's running values too
