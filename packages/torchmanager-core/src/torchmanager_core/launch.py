"""`torchmanager-run`: torchrun, whose failures read as one line, the error that ended the run.

torchrun ends a failed run by raising `ChildFailedError`: its launcher prints its own traceback and
a summary of every rank, after each rank printed its traceback (the same one, for an argument
check that fails everywhere). `torchmanager-run` takes torchrun's arguments and runs torchrun's
launcher in this process, with each worker started through `run_worker`: that records an uncaught
exception in the error file torchrun gives the worker (`TORCHELASTIC_ERROR_FILE`, in the format
of `torch.distributed.elastic`'s `@record`) and exits with code 1 without printing it. When the
run fails, the launcher prints one line, the error of the rank that failed first (rank 0 when
all failed alike), and exits with code 1, as torchrun does.

`TORCHMANAGER_FULL_ERROR=1` shows everything instead: each rank's traceback and torchrun's own
report.

A signal that ends the launcher (SIGTERM from a scheduler, SIGINT, SIGHUP) is passed on to the
workers by torchrun, which waits for them (up to its `--shutdown-timeout`, 30 s by default, then
kills them); the launcher then prints one line and exits with the workers' code: 143 for SIGTERM
once `fit` saved the run (see `errors.Preempted`). Each worker records its exit code for this in the
folder named by `TORCHMANAGER_EXIT_CODES` (a worker that the signal ended without Python counts
as 128 + the signal's number, as a shell reports it).

Usage: torchmanager-run [torchrun's options] script.py [its arguments]
       (or python -m torchmanager_core.launch ...)
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "EXIT_CODES_ENV",
    "FULL_ERROR_ENV",
    "WORKER_FLAG",
    "main",
    "one_line_report",
    "run_worker",
    "signal_report",
]

FULL_ERROR_ENV = "TORCHMANAGER_FULL_ERROR"
"""Set to 1 for every rank's traceback and torchrun's own report instead of one line."""

EXIT_CODES_ENV = "TORCHMANAGER_EXIT_CODES"
"""The folder where each worker writes its exit code (a file named by its rank), for the launcher's last line."""

_PRECISE_TIME = "torchmanager_time"

WORKER_FLAG = "--torchmanager-worker"
"""First argument of `python -m torchmanager_core.launch` in a worker: run a script as `run_worker` does."""


def _full_error() -> bool:
    return os.environ.get(FULL_ERROR_ENV, "0") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> None:
    """Run torchrun with `argv` (default: this process's arguments); on failure print one line and exit 1."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [WORKER_FLAG]:
        run_worker(arguments[1:])
        return
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parser = torchrun.get_args_parser()
    parser.prog = "torchmanager-run"  # not the module's file name, however it was started
    args = parser.parse_args(arguments)
    if not args.no_python and not args.run_path:  # a Python script or module: start it through `run_worker`
        target = ["-m", args.training_script] if args.module else [args.training_script]
        args.training_script_args = [WORKER_FLAG, *target, *args.training_script_args]
        args.training_script, args.module = "torchmanager_core.launch", True
    full_error = _full_error()
    if not full_error:
        for name in [name for name in logging.root.manager.loggerDict if name.startswith("torch.distributed")]:
            logging.getLogger(name).setLevel(logging.CRITICAL)  # its notices of the failure: the line below says it
    exit_codes = os.environ[EXIT_CODES_ENV] = tempfile.mkdtemp(prefix="torchmanager-exit-")
    try:
        torchrun.run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as error:
        if full_error:
            raise
        print(one_line_report(error.failures), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except SignalException as stopped:  # torchrun passed the signal on and waited for the workers
        if full_error:
            raise
        line, code = signal_report(stopped.sigval, _read_exit_codes(exit_codes))
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    finally:
        shutil.rmtree(exit_codes, ignore_errors=True)


def signal_report(signum: int, codes: Mapping[int, int]) -> tuple[str, int]:
    """The launcher's line after signal `signum` ended a run, and its exit code: the workers' code.

    Args:
        signum: The signal the launcher received (and torchrun passed on).
        codes: The exit code each worker recorded, by rank; with none recorded, the signal itself
            ended them: 128 + `signum`, as a shell reports it.
    Returns:
        The line, and the code to exit with: the workers' code when they agree, else the first
        nonzero one by rank.
    """
    told = f"torchmanager-run: {signal.Signals(signum).name} received and passed on to the workers"
    if not codes:
        return f"{told}: it ended them (exit code {128 + signum})", 128 + signum
    found = [codes[rank] for rank in sorted(codes)]
    if len(set(found)) == 1:
        return f"{told}: they exited with code {found[0]}", found[0]
    code = next(c for c in found if c != 0)
    each = ", ".join(f"{codes[rank]} (rank {rank})" for rank in sorted(codes))
    return f"{told}: they exited with codes {each}; exiting with code {code}", code


def _read_exit_codes(folder: str) -> dict[int, int]:
    codes: dict[int, int] = {}
    for name in os.listdir(folder):
        if name.isdigit():
            with open(os.path.join(folder, name)) as file:
                codes[int(name)] = int(file.read())
    return codes


def _record_exit_code(code: int) -> None:
    """Write this worker's exit code where the launcher reads it (whole or not at all)."""
    folder, rank = os.environ.get(EXIT_CODES_ENV), os.environ.get("RANK")
    if not folder or rank is None or not os.path.isdir(folder):
        return
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".exit.")
    with os.fdopen(fd, "w") as file:
        file.write(str(code))
    os.replace(temporary, os.path.join(folder, rank))


def _exit_code(error: SystemExit | KeyboardInterrupt) -> int:
    """The code the interpreter exits with for `error`: SystemExit's (None: 0, text: 1); 130 for Ctrl-C."""
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return error.code if isinstance(error.code, int) else 0 if error.code is None else 1


def one_line_report(failures: Mapping[int, Any]) -> str:
    """The line that says why a run failed, from torchrun's failures (rank -> `ProcessFailure`).

    The error recorded first is the cause (the others are mostly ranks failing because of it, in
    a collective); the lowest rank that recorded the same message reports it, so an error every
    rank raised alike is rank 0's. Without any recorded error (a rank killed by a signal, or
    exiting with a code of its own): how the lowest such rank ended, leaving out the ranks that
    torchrun itself stopped with SIGTERM once another had failed.
    """
    recorded = {rank: failure for rank, failure in failures.items() if isinstance(failure.message, dict)}
    hint = f"{FULL_ERROR_ENV}=1 shows every rank's traceback"
    if recorded:
        first = min(recorded, key=lambda rank: (_recorded_at(recorded[rank]), rank))
        message = recorded[first].message.get("message", "an error without a message")
        rank = min(rank for rank, failure in recorded.items() if failure.message.get("message") == message)
        return f"Rank {rank} failed: {message} ({hint})"
    stopped_by_torchrun = {rank for rank, failure in failures.items() if failure.exitcode == -signal.SIGTERM}
    rank = min(set(failures) - stopped_by_torchrun or failures)
    code = failures[rank].exitcode
    reason = f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"code {code}"
    return f"Rank {rank} failed: it ended with {reason}, with no Python error recorded (see its output above; {hint})"


def _recorded_at(failure: Any) -> float:
    """When the error was recorded: `run_worker`'s precise time, else torch's whole seconds."""
    extra = failure.message.get("extraInfo", {})
    return float(extra.get(_PRECISE_TIME, extra.get("timestamp", 0)))


def _run_as_python(argv: Sequence[str]) -> None:
    """Run `[-m] target args...` in this process as `python [-m] target args...` would start it."""
    as_module = list(argv[:1]) == ["-m"]
    target, *args = argv[1:] if as_module else argv
    sys.argv = [target, *args]
    if as_module:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target))  # as `python script.py` sets it
        runpy.run_path(target, run_name="__main__")


def run_worker(argv: Sequence[str]) -> None:
    """Run `[-m] target args...` as `python [-m] target args...` would, recording an uncaught exception.

    The exception goes to the file torchrun names in `TORCHELASTIC_ERROR_FILE` (written whole or
    not at all: torchrun may end this process at any moment once another rank failed), then the
    process exits with code 1, printing nothing unless `TORCHMANAGER_FULL_ERROR=1`. The exit code,
    whatever it is, goes to the launcher's `TORCHMANAGER_EXIT_CODES` folder.
    """
    try:
        _run_as_python(argv)
    except (SystemExit, KeyboardInterrupt) as ended:
        _record_exit_code(_exit_code(ended))
        raise
    except BaseException as error:
        _record(error)
        _record_exit_code(1)
        if _full_error():
            raise
        raise SystemExit(1) from None
    _record_exit_code(0)


def _record(error: BaseException) -> None:
    """Write `error` to torchrun's error file for this worker, in torch's format, atomically."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {
        "message": {
            "message": f"{type(error).__name__}: {error}",
            "extraInfo": {
                "py_callstack": traceback.format_exc(),
                "timestamp": str(int(time.time())),  # torch's launcher reads whole seconds
                _PRECISE_TIME: time.time(),  # which rank failed first, when several did in one second
            },
        }
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".error.", suffix=".tmp")
    with os.fdopen(fd, "w") as file:
        json.dump(data, file)
    os.replace(temporary, path)


if __name__ == "__main__":
    main()
