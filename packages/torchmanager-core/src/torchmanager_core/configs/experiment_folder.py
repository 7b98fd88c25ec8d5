"""Which experiment folder a run uses, and whether it continues the run kept there: one rule for
`Configs` (at start-up) and the `Experiment` callback (when it is made).

A folder `<root>/<name>.exp` is in one of three states:

- free: missing, holding no file (empty folders only), or holding a start that saved nothing
  (its in-progress mark but no `checkpoints/last.model`): a run may use it;
- unfinished: its run is in progress or was stopped (SIGTERM, a crash, a kill): the `Experiment`
  wrote the mark `in-progress` when training started and training did not end normally since,
  and `checkpoints/last.model` holds where it stopped (a file, or a sharded checkpoint's folder);
- taken: a finished run (the mark was removed when `fit` returned), or files of something else.

A re-run with `resume="auto"` (`Experiment`'s default, and `Configs` without flags) continues the
first of `<name>.exp`, `<name>-2.exp`, ... that is unfinished, or starts in the first free one: the
same command submitted again after a preemption resumes, and after a finished run starts anew
beside it. `resume=False` always starts in the first free folder; `resume=True` continues the
folder as named. A mark naming a live process of this host is a run still training: its folder
is taken (two jobs of one name never share a folder).

Under torchrun the main process applies the rule and every process takes its choice (one
collective, the process group started for it), so that they all use one folder and all continue a
run or none does, whatever each sees on the disk at that moment (a mark one of them wrote, a disk
shared between nodes).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
from collections.abc import Iterator
from typing import Literal, NamedTuple

from .. import checkpoint, distributed

__all__ = [
    "IN_PROGRESS",
    "FolderChoice",
    "choose_experiment_folder",
    "folder_state",
    "free_experiment_folder",
    "last_checkpoint",
    "mark_finished",
    "mark_in_progress",
]

IN_PROGRESS = "in-progress"
"""The mark file an experiment folder holds while its run has not finished."""

Resume = bool | Literal["auto"]
State = Literal["free", "unfinished", "taken"]


class FolderChoice(NamedTuple):
    """The folder a run uses and whether it continues the run there (from `last_checkpoint(folder)`)."""

    folder: str
    resume: bool


def last_checkpoint(folder: str) -> str:
    """`<folder>/checkpoints/last.model`, where an experiment's run is saved."""
    return os.path.join(folder, "checkpoints", "last.model")


def folder_state(folder: str) -> State:
    """Whether `folder` is free, holds an unfinished run, or is taken (see the module)."""
    if not _holds_files(folder):
        return "free"
    mark = os.path.join(folder, IN_PROGRESS)
    if not os.path.isfile(mark) or _still_running(mark):
        return "taken"
    return "unfinished" if checkpoint.exists(last_checkpoint(folder)) else "free"


def choose_experiment_folder(folder: str, resume: Resume = "auto") -> FolderChoice:
    """The folder for a run named `folder` (an `<stem>.exp` path) under `resume` (see the module).

    Under torchrun (the process group is started here if it is not yet) every process gets the main
    process's choice: every process calls it at the same point, as `Configs` and `Experiment` do.

    Args:
        folder: The experiment folder the name gives.
        resume: "auto" (continue an unfinished run, else start in a free folder), False (a free
            folder) or True (this folder, continuing its run if it has a last checkpoint).
    Returns:
        The folder and whether the run there is continued.
    """
    if distributed.init_from_environment() and distributed.is_distributed():
        mine = _choose(folder, resume) if distributed.is_main_process() else None
        return FolderChoice(*distributed.from_main_process(mine))
    return _choose(folder, resume)


def _choose(folder: str, resume: Resume) -> FolderChoice:
    """`choose_experiment_folder` as one process sees the disk."""
    if resume is True:
        return FolderChoice(folder, checkpoint.exists(last_checkpoint(folder)))
    usable = ("free", "unfinished") if resume == "auto" else ("free",)
    for candidate in _numbered(folder):
        state = folder_state(candidate)
        if state in usable:
            return FolderChoice(candidate, state == "unfinished")
    raise AssertionError("unreachable: the numbered folders never end")


def free_experiment_folder(folder: str) -> str:
    """`folder` if it is free, else the first free `<stem>-2.exp`, `<stem>-3.exp`, ... (a run never continued)."""
    return choose_experiment_folder(folder, False).folder


def mark_in_progress(folder: str) -> None:
    """Mark `folder`'s run as not finished (written when training starts; names this process and host)."""
    os.makedirs(folder, exist_ok=True)
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid())})
    with open(os.path.join(folder, IN_PROGRESS), "w") as file:
        file.write(text + "\n")


def mark_finished(folder: str) -> None:
    """Remove the in-progress mark: the run in `folder` finished, and a re-run starts a new folder."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, IN_PROGRESS))


def _numbered(folder: str) -> Iterator[str]:
    """`<stem>.exp`, `<stem>-2.exp`, `<stem>-3.exp`, ... without end."""
    yield folder
    stem = folder[: -len(".exp")] if folder.endswith(".exp") else folder
    for number in itertools.count(2):
        yield f"{stem}-{number}.exp"


def _holds_files(folder: str) -> bool:
    """Whether `folder` exists and holds a file (or link) anywhere below it."""
    if not os.path.isdir(folder):
        return os.path.exists(folder)
    return any(files for _, _, files in os.walk(folder)) or any(
        os.path.islink(os.path.join(root, name)) for root, dirs, _ in os.walk(folder) for name in dirs
    )


def _still_running(mark: str) -> bool:
    """Whether the mark names a live process of this host other than this one (a run still training)."""
    try:
        with open(mark) as file:
            owner = json.loads(file.read() or "{}")
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    # a process id is reused (a restarted container counts from 1 again): the same id must be the same process
    return bool(owner.get("process_start") == _process_start(pid))


def _process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux's /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
