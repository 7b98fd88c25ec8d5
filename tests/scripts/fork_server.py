"""A fork server, so that tests can start and SIGKILL many short torch processes without paying for
importing torch in each (about 2 s apiece on CI's 2 cores).

Server side (`serve(main)`, in a script that has imported what its children need): for each line
`run FOLDER ARGS...` read from stdin it forks a child that runs `main(ARGS)` in FOLDER, with this
process's stdout and stderr; prints `pid <pid>` at once (the child starts only once that line is
out, so none of its output can come before or inside it), then `exit <pid> <code>` when the child ends
(code -9 after a SIGKILL, a `SystemExit`'s code as the interpreter would exit with it, 1 after another
exception). The server runs no torch code itself, so each child starts as a fresh
process would: modules imported, no state. Each line, the server's and (in the scripts here) the
children's, is written in one write, which a kill cannot cut. Client side (`ForkServer`): the test's handle on a server.
Used by tests/test_kill_and_resume.py, tests/test_kill_during_write.py and tests/test_preemption_processes.py.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ForkServer", "ForkServers", "serve"]

T = TypeVar("T")


def serve(main: Callable[[list[str]], None]) -> None:
    """Run `main(args)` in a forked child for each `run FOLDER ARGS...` line of stdin, one at a time."""
    for line in sys.stdin:
        command, folder, *args = shlex.split(line)
        if command != "run":
            raise ValueError(f"Commands are `run FOLDER ARGS...`. Received: {line!r}")
        sys.stdout.flush()  # the child must not inherit buffered lines and print them twice
        ready, go = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(go)
                os.read(ready, 1)  # wait until the `pid` line is out: the child's first line must come after it
                os.close(ready)
                os.chdir(folder)
                main(args)
            except SystemExit as exit:  # sys.exit(code), or an exception that is one, such as torchmanager's Preempted
                code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready)
        sys.stdout.write(f"pid {pid}\n")  # one write, even unbuffered (PYTHONUNBUFFERED)
        sys.stdout.flush()
        os.write(go, b"!")
        os.close(go)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {pid} {os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


class ForkServer:
    """A server process started with `python SCRIPT --serve`; its stderr goes to `log`.

    Args:
        script: A script that calls `serve(main)` when given `--serve`.
        log: The file that receives the server's and its children's stderr.
    """

    def __init__(self, script: Path, log: Path) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        self.exit_code: int | None = None

    def start(self, folder: Path, args: list[str]) -> int:
        """Start a child running the script's `main(args)` in `folder`; returns its pid."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(shlex.join(["run", str(folder), *args]) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("pid "):
                self.exit_code = None
                return int(line.split()[1])
        raise RuntimeError(f"The fork server ended; see {self.log}")

    def lines(self, pid: int) -> Iterator[str]:
        """The child's stdout lines until it ends; `exit_code` is then set (-9 after a SIGKILL)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if words[:2] == ["exit", str(pid)]:
                self.exit_code = int(words[2])
                return
            yield line.rstrip("\n")
        raise RuntimeError(f"The fork server ended; see {self.log}")

    def run(
        self,
        folder: Path,
        args: list[str],
        kill_after: str | None = None,
        delay: float = 0.0,
        signum: int = signal.SIGKILL,
    ) -> tuple[int, list[str]]:
        """Run a child to its end, or send it `signum` (SIGKILL) `delay` seconds after it prints the line `kill_after`.

        Returns:
            Its exit code (-9 after a SIGKILL) and its stdout lines.
        """
        pid = self.start(folder, args)
        lines = []
        for line in self.lines(pid):
            lines.append(line)
            if line == kill_after:
                time.sleep(delay)
                os.kill(pid, signum)
        assert self.exit_code is not None
        return self.exit_code, lines

    def close(self) -> None:
        """End the server (after its current child)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)
        self._log_file.close()


class ForkServers:
    """Fork servers shared by the threads of a test: `run(task, *args)` calls `task(server, *args)` on a free one.

    Args:
        script: A script that calls `serve(main)` when given `--serve`.
        folder: Where the servers' logs go (`server-<i>.log`).
        count: How many servers.
    """

    def __init__(self, script: Path, folder: Path, count: int) -> None:
        self.servers = [ForkServer(script, folder / f"server-{index}.log") for index in range(count)]
        self._free: queue.Queue[ForkServer] = queue.Queue()
        for server in self.servers:
            self._free.put(server)

    def run(self, task: Callable[..., T], *args: Any) -> T:
        """`task(server, *args)` with a server no other thread uses meanwhile (waits for one)."""
        server = self._free.get()
        try:
            return task(server, *args)
        finally:
            self._free.put(server)

    def close(self) -> None:
        """End every server (after its current child)."""
        for server in self.servers:
            server.close()
