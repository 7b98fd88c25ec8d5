"""Signal a job started the way a task runner starts it, and see how each of its processes ended.

Usage: task_runner_signal.py OUT SIGNAL COMMAND

This process becomes a child subreaper (processes orphaned below it come to it, so it learns how
they end), then starts a runner in a session of its own: a Python process that runs COMMAND as
`hatch run` does (`subprocess.run(COMMAND, shell=True)`, its `platform.run_command`), with stdout and
stderr to OUT/output.txt. Once the output has a line starting with "Epoch 1/" (the job is training),
it sends SIGNAL: SIGTERM to the runner alone (as `kill` or a scheduler that knows one pid does), or
SIGINT to the runner's whole process group (as Ctrl-C in a terminal). Then it reaps every process
below it and writes OUT/ended.json: a list of {"command", "code"} (the exit code, negative for the
signal that ended it), the runner first. A job still running after 300 s is killed and noted.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
RUNNER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1], shell=True).returncode)"


def descendants(root: int) -> dict[int, str]:
    """The processes below `root` now, with their command lines."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def main(out: str, signal_name: str, command: str) -> None:
    folder = Path(out)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    output = folder / "output.txt"
    with output.open("w") as sink:
        runner = subprocess.Popen(
            [sys.executable, "-c", RUNNER, command], stdout=sink, stderr=sink, cwd=folder, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while not any(line.startswith("Epoch 1/") for line in output.read_text().splitlines()):
        if runner.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the job did not start training:\n{output.read_text()}")
        time.sleep(0.05)
    commands = {runner.pid: "runner", **descendants(runner.pid)}
    if signal_name == "SIGTERM":
        os.kill(runner.pid, signal.SIGTERM)
    else:
        os.killpg(runner.pid, signal.Signals[signal_name])
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                for stuck in descendants(os.getpid()):
                    os.kill(stuck, signal.SIGKILL)
                ended.append({"command": "timeout", "code": None})
                deadline = float("inf")
            time.sleep(0.05)
            continue
        ended.append({"command": commands.get(pid, "?"), "code": os.waitstatus_to_exitcode(status)})
    ended.sort(key=lambda process: process["command"] != "runner")
    (folder / "ended.json").write_text(json.dumps(ended))


if __name__ == "__main__":
    main(*sys.argv[1:])
