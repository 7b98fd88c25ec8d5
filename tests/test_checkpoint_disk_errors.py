"""When the disk says no: in a real process (tests/scripts/preempt_train.py, one process, a step checkpoint
every 2 optimizer updates), checkpoint writes start failing after batch 4 of epoch 2, because the kernel
refuses writes beyond a file size limit (RLIMIT_FSIZE: EFBIG, as a full disk or a quota would refuse them) or
because the checkpoint folder became read-only (EACCES, in a process without root's right to ignore it).

Each time the previous checkpoint (after update 14) is left intact and loadable, and no temporary file is
left behind. Then the policy: by default (`on_checkpoint_error="raise"`) training stops with a
`CheckpointError` naming the path and the reason, and the next start resumes from the intact checkpoint and
ends bit-identical to an uninterrupted run; with `on_checkpoint_error="continue"` each failure is logged and
training goes on to the same weights as the uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.run_records import assert_same_tensors, trajectory
from tests.workspace import ROOT
from torchmanager_core import checkpoint

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "preempt_train.py"
JOB = [".", "--checkpoint", "last", "--every", "2"]
FAULT_AT = "0:2:4"  # after batch 4 of epoch 2: update 16, whose checkpoint is the first to fail
TIMEOUT = 120


def unprivileged() -> list[str]:
    """A command prefix without root's right to write where permissions forbid (CAP_DAC_OVERRIDE); none when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without `setpriv` to drop CAP_DAC_OVERRIDE, a read-only folder is writable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def run(folder: Path, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, str(SCRIPT), *JOB, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=folder,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = run(folder)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = torch.load(folder / "final-rank0.pt", weights_only=True)
    result["trajectory"] = trajectory(folder)
    return result


def assert_previous_checkpoint_intact(folder: Path) -> None:
    checkpoints = folder / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["last.model"]  # no temporary file left behind
    saved = checkpoint.load(checkpoints / "last.model")  # complete: a partial file would not load
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, 2, 14)


def assert_same_run(expected: dict[str, Any], folder: Path) -> None:
    final = torch.load(folder / "final-rank0.pt", weights_only=True)
    assert_same_tensors(expected["model"], final["model"], "model")
    assert_same_tensors(expected["optimizer"], final["optimizer"], "optimizer")
    assert final["summary"] == expected["summary"]
    assert trajectory(folder) == expected["trajectory"]


REASONS = {
    "--fsize": "writing it failed (File too large); the previous checkpoint at this path is kept",
    "--read-only": "folder `{folder}/checkpoints` is not writable (Permission denied)",
}


@pytest.mark.parametrize("fault", ["--fsize", "--read-only"])
def test_by_default_training_stops_with_the_path_and_the_reason_and_the_next_start_resumes(
    tmp_path: Path, uninterrupted: dict[str, Any], fault: str
) -> None:
    prefix = unprivileged() if fault == "--read-only" else []
    try:
        done = run(tmp_path, fault, FAULT_AT, prefix=prefix)
    finally:
        os.chmod(tmp_path / "checkpoints", stat.S_IRWXU)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    kind = "CheckpointWriteError" if fault == "--fsize" else "CheckpointError"
    assert error.startswith(
        f"torchmanager_core.checkpoint.{kind}: Cannot save checkpoint `checkpoints/last.model`: "
        + REASONS[fault].format(folder=tmp_path)
    ), error
    assert_previous_checkpoint_intact(tmp_path)

    again = run(tmp_path, "--launch", "1")
    assert again.returncode == 0, again.stderr
    assert_same_run(uninterrupted, tmp_path)


@pytest.mark.parametrize("fault", ["--fsize", "--read-only"])
def test_with_continue_each_failure_is_logged_and_training_goes_on(
    tmp_path: Path, uninterrupted: dict[str, Any], fault: str
) -> None:
    prefix = unprivileged() if fault == "--read-only" else []
    try:
        done = run(tmp_path, fault, FAULT_AT, "--on-checkpoint-error", "continue", prefix=prefix)
    finally:
        os.chmod(tmp_path / "checkpoints", stat.S_IRWXU)
    assert done.returncode == 0, done.stderr
    failures = [line for line in done.stdout.splitlines() if line.startswith("Checkpoint not saved")]
    # the step checkpoints of updates 16, 18, ..., 24 in epoch 2 and its end's, then 26, ..., 36 and epoch 3's end
    assert len(failures) == 5 + 1 + 6 + 1
    assert failures[0].startswith(
        "Checkpoint not saved, training goes on (on_checkpoint_error='continue'): Cannot save checkpoint "
        "`checkpoints/last.model`: " + REASONS[fault].format(folder=tmp_path)
    )
    assert_previous_checkpoint_intact(tmp_path)
    assert_same_run(uninterrupted, tmp_path)  # the failed saves changed nothing in training
