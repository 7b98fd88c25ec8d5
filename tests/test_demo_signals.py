"""`hatch run demo` under signals: the training job is never left running, orphaned, nor killed mid-save.

hatch runs a script as `subprocess.run(command, shell=True)`: on SIGTERM it dies and leaves its child
alone; on Ctrl-C it SIGKILLs its child a quarter of a second later. The demo command of hatch.toml
(`exec python -m torchmanager_core.supervise examples/digits.py ...`) is run that way by
tests/scripts/task_runner_signal.py, with real processes and real signals, and every process below
it is reaped to learn how it ended. The reference is the preemption contract of one process: SIGTERM
during `fit` saves the run and exits with 143.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib

from tests.workspace import ROOT
from torchmanager_core import supervise

pytestmark = pytest.mark.slow

HARNESS = ROOT / "tests" / "scripts" / "task_runner_signal.py"


def hatch_script(name: str, *args: str) -> str:
    """hatch.toml's script `name`, with its arguments, the main job's path made absolute (the job runs elsewhere)."""
    scripts = tomllib.loads((ROOT / "hatch.toml").read_text())["envs"]["default"]["scripts"]
    command: str = scripts[name]
    return command.replace("{args}", " ".join(args)).replace("examples/digits.py", str(ROOT / "examples" / "digits.py"))


def demo_command(*args: str) -> str:
    """hatch.toml's demo script, with its arguments."""
    return hatch_script("demo", *args)


def signalled(tmp_path: Path, signal_name: str, command: str | None = None) -> list[dict[str, Any]]:
    command = command or demo_command("--epochs", "100000", "--experiment", "job", "--quiet")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # as hatch sets it
    env.update(OMP_NUM_THREADS="1", TORCHMANAGER_DIST_TIMEOUT="120")
    done = subprocess.run(
        [sys.executable, str(HARNESS), str(tmp_path), signal_name, command], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ended: list[dict[str, Any]] = json.loads((tmp_path / "ended.json").read_text())
    assert all(process["command"] != "timeout" for process in ended), (tmp_path / "output.txt").read_text()
    return ended


def test_sigterm_to_hatch_reaches_the_job_which_saves_and_exits_143(tmp_path: Path) -> None:
    ended = signalled(tmp_path, "SIGTERM")
    runner, *below = ended
    assert runner["code"] == -15  # hatch itself dies of SIGTERM, as it does
    # the supervisor (hatch's child) exits with the job's own code: the job got SIGTERM and saved
    assert [process["code"] for process in below] == [143], ended
    output = (tmp_path / "output.txt").read_text()
    assert "SIGTERM received: training stopped" in output
    assert (tmp_path / "experiments" / "job.exp" / "checkpoints" / "last.model").is_file()


def test_sigterm_to_hatch_running_the_readme_s_torchrun_line_reaches_every_worker(tmp_path: Path) -> None:
    """`hatch run torchmanager-run --standalone --nproc_per_node=2 examples/digits.py ...`, the README's line:
    hatch dies of SIGTERM; without the supervisor the launcher and its workers went on training, orphaned."""
    command = hatch_script(
        "torchmanager-run", "--standalone", "--nproc_per_node=2", "examples/digits.py", "--epochs", "100000"
    )
    ended = signalled(tmp_path, "SIGTERM", f"{command} --experiment job --quiet")
    runner, *below = ended
    assert runner["code"] == -15
    # nothing orphaned: the supervisor alone came to the harness, with the launcher's code (its workers saved)
    assert [process["code"] for process in below] == [143], ended
    output = (tmp_path / "output.txt").read_text()
    assert "torchmanager-run: SIGTERM received and passed on to the workers: they exited with code 143" in output
    assert (tmp_path / "experiments" / "job.exp" / "checkpoints" / "last.model").is_file()


def test_ctrl_c_leaves_the_job_to_end_by_itself(tmp_path: Path) -> None:
    ended = signalled(tmp_path, "SIGINT")
    codes = {
        ("supervise" if "supervise" in p["command"] else "job" if "digits.py" in p["command"] else p["command"]): p[
            "code"
        ]
        for p in ended
    }
    assert codes["supervise"] == -9  # the runner SIGKILLed its child, as subprocess.run does after Ctrl-C ...
    assert codes["job"] != -9  # ... but the job, which got the SIGINT from the terminal, ended by itself


def test_the_supervisor_needs_a_target() -> None:
    with pytest.raises(
        ValueError, match=r"needs a script or `-m module` to run, then its arguments. Received: argv=\[\]"
    ):
        supervise.supervise([])
