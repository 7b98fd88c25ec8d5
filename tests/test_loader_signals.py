"""Loader processes survive SIGTERM and SIGUSR1 sent to the whole job (`os.killpg`, as SLURM and torchrun's
agent send them), once `loader_workers.protect_workers` applied to their loader; the main process still
ends them (at exit, even with workers that live across epochs). Without it, torch's workers die of
SIGTERM and the main process raises (the control case). Real processes: tests/scripts/loader_signals.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workspace import ROOT
from torchmanager_core import checkpoint

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "loader_signals.py"
BATCHES = 12  # an epoch


def signalled_run(*args: str, usr1: bool = True) -> tuple[int, list[str], str, list[int]]:
    """Run the script in its own process group; after its 4th batch, send the group SIGTERM then SIGUSR1."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines, workers = [], []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith("workers"):
            workers = [int(pid) for pid in line.split()[1:]]
        if line.strip() == "batch 0 3":
            os.killpg(process.pid, signal.SIGTERM)
            if usr1:
                os.killpg(process.pid, signal.SIGUSR1)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, lines, stderr, workers


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("kind", "epochs"), [("dataset", 2), ("dataloader", 1)])
def test_protected_workers_survive_the_job_s_signals_and_end_with_the_main_process(kind: str, epochs: int) -> None:
    code, lines, stderr, workers = signalled_run(kind, "yes", str(epochs))
    assert code == 0, stderr
    assert lines[-1] == f"done {BATCHES * epochs} signals {signal.SIGUSR1} {signal.SIGTERM}"  # every batch loaded
    assert len(workers) == 2 and all(gone(pid) for pid in workers)  # the main process ended them


def test_unprotected_workers_die_of_the_job_s_sigterm() -> None:
    code, lines, stderr, _ = signalled_run("dataloader", "no", "1")
    assert code != 0 and "killed by signal: Terminated" in stderr
    assert not lines[-1].startswith("done")


def test_fit_with_a_loader_process_is_preempted_by_a_sigterm_to_the_whole_job(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    code, lines, stderr, _ = signalled_run("fit", str(path), usr1=False)
    assert code == 143, stderr  # a preemption: saved, then 128 + SIGTERM
    assert checkpoint.load(path)["epoch"] == 0 and "batch 0 3" in lines
