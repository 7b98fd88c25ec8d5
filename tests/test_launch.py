"""`torchmanager-run` (torchmanager_core.launch): torchrun whose failures read as one line.

Real launches of two CPU processes (tests/scripts/launch_probe.py, ddp_fail.py): an argument check
failing on every rank, an error on rank 1 alone, a rank killed by a signal, each ending with exactly
one line on stderr that carries the message a single process raises; a script or module started
as `python [-m] target` would start it; `TORCHMANAGER_FULL_ERROR=1` gives the tracebacks back. The
rank chosen for the line is checked without launches, on torchrun's own failure records.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomllib
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from tests.test_torchrun import torchrun
from tests.workspace import ROOT
from torchmanager_core import launch

SCRIPTS = ROOT / "tests" / "scripts"
PROBE = SCRIPTS / "launch_probe.py"
HINT = " (TORCHMANAGER_FULL_ERROR=1 shows every rank's traceback)"


def run(*args: str, cwd: Path, **options: Any) -> Any:
    return torchrun(*args, cwd=cwd, launcher="torchmanager_core.launch", **options)  # type: ignore[arg-type]


def single_process_error() -> str:
    """What `fit(..., epochs=-1)` raises in one process: the reference for the launched ranks' line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_probe", PROBE)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    with pytest.raises(ValueError) as raised:
        probe.make_manager().fit(probe.data(), epochs=-1)
    return f"ValueError: {raised.value}"


@pytest.mark.slow
def test_an_error_of_every_rank_is_one_line(tmp_path: Path) -> None:
    done = run(PROBE, "bad-epochs", cwd=tmp_path)
    assert done.returncode == 1
    # whichever rank recorded it first names it (rank 0 unless torchrun ended it before it could)
    assert re.fullmatch(rf"Rank [01] failed: {re.escape(single_process_error() + HINT)}\n", done.stderr), done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_an_error_of_one_rank_is_its_line_after_the_other_rank_s_output(tmp_path: Path) -> None:
    done = run(SCRIPTS / "ddp_fail.py", str(tmp_path), "raise", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"Rank 1 failed: RuntimeError: rank 1 failed on purpose when epoch 2 started{HINT}\n"
    assert "Epoch 1/3: loss=" in done.stdout and not list(tmp_path.glob("rank*-finished"))


@pytest.mark.slow
def test_a_rank_killed_by_a_signal_is_named_with_its_signal(tmp_path: Path) -> None:
    done = run(PROBE, "sigkill", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "Rank 1 failed: it ended with signal SIGKILL, with no Python error recorded "
        "(see its output above; TORCHMANAGER_FULL_ERROR=1 shows every rank's traceback)\n"
    ), done.stderr


@pytest.mark.slow
def test_full_error_shows_each_rank_s_traceback_and_torchrun_s_report(tmp_path: Path) -> None:
    done = run(PROBE, "bad-epochs", cwd=tmp_path, env={"TORCHMANAGER_FULL_ERROR": "1"})
    assert done.returncode == 1
    assert "ChildFailedError" in done.stderr and "Rank 0 failed" not in done.stderr
    assert done.stderr.count(single_process_error()) >= 2  # at least a rank's traceback and torchrun's summary


@pytest.mark.slow
@pytest.mark.parametrize("as_module", [False, True], ids=["script", "module"])
def test_a_target_starts_as_python_would_start_it(tmp_path: Path, as_module: bool) -> None:
    target = ["-m", "launch_probe"] if as_module else [str(PROBE)]
    env = {"PYTHONPATH": str(SCRIPTS)} if as_module else {}
    done = run(*target, "probe", str(tmp_path), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert Path(seen["argv"][0]).resolve() == PROBE.resolve()
        assert seen["argv"][1:] == ["probe", str(tmp_path)] and seen["name"] == "__main__"
        assert seen["sibling"]  # the script's folder is on sys.path (from PYTHONPATH for -m)
        if not as_module:
            assert Path(seen["path0"]).resolve() == SCRIPTS.resolve()


def failure(tmp_path: Path, rank: int, exitcode: int, message: str | None = None, at: float = 0.0) -> ProcessFailure:
    """torchrun's record of a failed rank, read from an error file as `run_worker` writes it (when `message`)."""
    path = tmp_path / f"error{rank}.json"
    if message is not None:
        extra = {"py_callstack": "Traceback ...", "timestamp": str(int(at)), "torchmanager_time": at}
        path.write_text(json.dumps({"message": {"message": message, "extraInfo": extra}}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(path))


def test_the_line_names_the_first_error_and_the_lowest_rank_that_had_it(tmp_path: Path) -> None:
    same = {1: failure(tmp_path, 1, 1, "ValueError: bad", 10.2), 0: failure(tmp_path, 0, 1, "ValueError: bad", 10.7)}
    assert launch.one_line_report(same) == f"Rank 0 failed: ValueError: bad{HINT}"
    caused = {
        0: failure(tmp_path, 0, 1, "RuntimeError: Connection closed by peer", 20.9),  # in the same whole second
        1: failure(tmp_path, 1, 1, "KeyError: 'x'", 20.1),
        2: failure(tmp_path, 2, -signal.SIGTERM),  # ended by torchrun afterwards
    }
    assert launch.one_line_report(caused) == f"Rank 1 failed: KeyError: 'x'{HINT}"


def test_without_a_recorded_error_the_line_gives_how_the_rank_ended(tmp_path: Path) -> None:
    # rank 1 was stopped by torchrun (SIGTERM) after rank 3 exited with its own code
    assert launch.one_line_report({3: failure(tmp_path, 3, 2), 1: failure(tmp_path, 1, -signal.SIGTERM)}) == (
        "Rank 3 failed: it ended with code 2, with no Python error recorded "
        "(see its output above; TORCHMANAGER_FULL_ERROR=1 shows every rank's traceback)"
    )
    assert launch.one_line_report({1: failure(tmp_path, 1, -signal.SIGTERM)}).startswith(
        "Rank 1 failed: it ended with signal SIGTERM,"
    )


def test_the_worker_writes_torch_s_error_file_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `run_worker` records is what torchrun's own reader (`ProcessFailure`) takes for a recorded error."""
    script = tmp_path / "fails.py"
    script.write_text("raise KeyError('missing')\n")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    monkeypatch.delenv("TORCHMANAGER_FULL_ERROR", raising=False)
    monkeypatch.setattr("sys.argv", ["before"])
    monkeypatch.setattr("sys.path", ["", *sys.path])
    with pytest.raises(SystemExit) as exited:
        launch.run_worker([str(script)])
    assert exited.value.code == 1
    read = ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(tmp_path / "error.json"))
    assert read.message["message"] == "KeyError: 'missing'"
    assert "raise KeyError('missing')" in read.message["extraInfo"]["py_callstack"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".error.")] == []  # no temporary file left


def test_the_readme_launches_with_the_installed_command() -> None:
    """The README's torchrun command is `torchmanager-run`, the script torchmanager-core installs (tested above as a module)."""
    scaling = (ROOT / "README.md").read_text().split("## Scaling out with torchrun", 1)[1]
    (command,) = re.findall(r"```bash\n(.*?)\n```", scaling.split("\n## ", 1)[0], re.DOTALL)
    assert command.startswith("hatch run torchmanager-run --standalone --nproc_per_node=2 examples/digits.py")
    project = tomllib.loads((ROOT / "packages" / "torchmanager-core" / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"torchmanager-run": "torchmanager_core.launch:main"}


@pytest.mark.parametrize(
    "started",
    [["-m", "torchmanager_core.launch"], ["-m", "torchmanager_core.supervise", "-m", "torchmanager_core.launch"]],
    ids=["module", "as hatch runs it"],
)
def test_help_names_the_command_and_torchrun_s_options(started: list[str]) -> None:
    """Not "usage: launch.py": the command's own name, however the module was started (hatch.toml's script)."""
    done = subprocess.run([sys.executable, *started, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: torchmanager-run [-h]")
    assert "--nproc-per-node" in done.stdout and "training_script" in done.stdout


@pytest.mark.slow
def test_sigterm_to_the_launcher_reaches_the_workers_and_ends_in_one_line(tmp_path: Path) -> None:
    """The preemption contract through the launcher: the workers save and exit 143, and so does it, in one line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHMANAGER_DIST_TIMEOUT": "120"}
    env.pop("TORCHMANAGER_FULL_ERROR", None)
    command = [sys.executable, "-m", "torchmanager_core.launch", "--standalone", "--nproc_per_node=2"]
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        launcher = subprocess.Popen(
            [*command, str(PROBE), "until-signalled", str(tmp_path)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not ((tmp_path / "ready0").exists() and (tmp_path / "ready1").exists()):
            assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.05)
        os.kill(launcher.pid, signal.SIGTERM)  # the launcher alone, as a scheduler that knows its pid
        code = launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    err, out = (tmp_path / "stderr").read_text(), (tmp_path / "stdout").read_text()
    assert code == 143, err  # what one process preempted by SIGTERM exits with
    assert err.splitlines() == [
        "torchmanager-run: SIGTERM received and passed on to the workers: they exited with code 143"
    ], err
    assert "SIGTERM received: training stopped" in out and (tmp_path / "last.model").is_file()


def test_the_signal_line_gives_the_workers_code() -> None:
    term, line = signal.SIGTERM, "torchmanager-run: SIGTERM received and passed on to the workers"
    assert launch.signal_report(term, {0: 143, 1: 143}) == (f"{line}: they exited with code 143", 143)
    assert launch.signal_report(term, {1: 1, 0: 143}) == (
        f"{line}: they exited with codes 143 (rank 0), 1 (rank 1); exiting with code 143",
        143,
    )
    assert launch.signal_report(term, {0: 0, 1: 143})[1] == 143  # one that finished first: the other's code
    # a script without fit, ended by the signal itself, recorded nothing: a shell's code for it
    assert launch.signal_report(term, {}) == (f"{line}: it ended them (exit code 143)", 143)
    assert launch.signal_report(signal.SIGINT, {})[1] == 130
