"""Run a training script under a task runner (`hatch run demo`) so that signals reach it and nothing is orphaned.

A task runner such as hatch runs a script as its child and neither forwards SIGTERM (it dies of it,
leaving the child training, orphaned) nor waits on Ctrl-C (it kills its child with SIGKILL a
quarter of a second later, in the middle of the save that `fit` makes). `python -m
torchmanager_core.supervise script.py args...` (started with `exec`, so that it is the runner's
own child) runs the script as a child of its own and:

- passes SIGTERM, SIGHUP and SIGUSR1 on to it, waits for it and exits with its code (143 for
  SIGTERM once `fit` saved the run);
- gets SIGTERM itself when its parent ends (Linux's PR_SET_PDEATHSIG; elsewhere a thread that
  watches the parent), so a SIGTERM that ended the runner reaches the script too;
- leaves Ctrl-C to the terminal, which sends SIGINT to the script directly: if the runner then
  kills this process, the script goes on to finish its save and exit.

Usage: python -m torchmanager_core.supervise [-m] target [its arguments]
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["FORWARDED", "follow_parent", "main", "supervise"]

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
"""The signals passed on to the script (SIGINT comes to it from the terminal, with the same key press)."""

_PR_SET_PDEATHSIG = 1


def follow_parent(signum: int = signal.SIGTERM) -> None:
    """Have this process receive `signum` when its parent process ends.

    On Linux the kernel sends it (PR_SET_PDEATHSIG); elsewhere a daemon thread checks the parent's
    id every second. A parent that ended before the call counts: the signal comes at once.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0:
            if os.getppid() != parent:
                os.kill(os.getpid(), signum)
            return
    threading.Thread(target=_watch_parent, args=(parent, signum), daemon=True).start()


def _watch_parent(parent: int, signum: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signum)


def supervise(argv: Sequence[str]) -> int:
    """Run `python [-m] target args...` (`argv` = `[-m] target args...`) as a child, pass the
    `FORWARDED` signals on to it, and return its exit code (128 + the signal's number if a signal ended it).

    Raises:
        ValueError: `argv` names no script or module.
    """
    if not argv or list(argv) == ["-m"]:
        raise ValueError(
            "`torchmanager_core.supervise` needs a script or `-m module` to run, then its arguments. "
            f"Received: argv={list(argv)!r}"
        )
    child = subprocess.Popen([sys.executable, *argv])

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to the script itself
    follow_parent(signal.SIGTERM)
    code = child.wait()
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m torchmanager_core.supervise [-m] target args...`: exit with the script's code."""
    raise SystemExit(supervise(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
