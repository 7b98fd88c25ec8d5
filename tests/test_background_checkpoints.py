"""Background checkpoint writes in real processes: a SIGKILL while the write is in progress leaves the previous
checkpoint loadable (or the new one, once renamed), a process that exits waits for its write, and the error
of a write nobody waited for is still reported.

The child (tests/scripts/background_writer.py) saves checkpoint 1, submits checkpoint 2 to a
`BackgroundWriter` and changes the submitted tensors at once, as training would; its write stops at a
chosen point (inside the payload's write, before the fsync, before and after the rename) until the
kill. References: `payload(n)` rebuilt here, and `checkpoint.load` of the file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.checkpoint_writer import payload
from tests.scripts.fork_server import ForkServer
from tests.test_kill_during_write import assert_same, temp_files
from tests.workspace import ROOT
from torchmanager_core import checkpoint

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "background_writer.py"


def test_a_kill_during_a_background_write_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    server = ForkServer(SCRIPT, tmp_path.parent / f"{tmp_path.name}-server.log")
    points = ["write:100", "write:2000000", "write:4000000", "fsync", "replace", "replaced"]
    try:
        for point in points:
            exit_code, lines = server.run(tmp_path, [str(path), point], "paused")
            assert exit_code == -signal.SIGKILL, f"see {server.log}"
            assert lines[0] == "saved 1" and set(lines[1:]) <= {"training", "paused"} and "paused" in lines
            loaded = checkpoint.load(path)  # a partial file would raise CheckpointError
            expected = 2 if point == "replaced" else 1
            assert_same(payload(expected), loaded)  # checkpoint 2 as submitted, not as training changed it after
            left = temp_files(tmp_path)  # the save of checkpoint 1 removed earlier kills' temporary files
            assert len(left) == (point != "replaced") and all(name.startswith(".last.model.") for name in left)
            if point.startswith("write:"):  # killed inside the file's write
                assert (tmp_path / left.pop()).stat().st_size == int(point.split(":")[1])
    finally:
        server.close()
    assert sorted(p.name for p in tmp_path.glob("*.model")) == ["last.model"]


def test_a_process_that_exits_waits_for_its_write(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "none"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["saved 1", "training"]
    assert_same(payload(2), checkpoint.load(path))
    assert temp_files(tmp_path) == set()


def test_an_error_nobody_waited_for_is_reported_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "fail"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0
    assert "A checkpoint written in the background failed and nobody waited for it" in done.stderr
    assert "No space left on device" in done.stderr
    assert_same(payload(1), checkpoint.load(path))  # the previous checkpoint is intact
