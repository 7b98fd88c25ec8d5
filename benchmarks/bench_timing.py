"""How runs are timed: interleaved rounds with medians, fresh-process import time, and the machine's facts.

Who owns what: this module measures and describes the machine; it knows nothing of what a run
trains (`bench_loops`) or which runs a row compares (`bench_rows`).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

import torchmanager

__all__ = ["cpu_model", "import_time", "interleaved_medians", "load_line", "machine_facts", "two_process_medians"]


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()  # garbage of the previous run is not charged to this one
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(
    contenders: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, float]:
    """The median seconds of each contender over `rounds` rounds, each round running every contender once.

    The order within a round rotates, so no contender always runs first (after a pause) or last;
    `warmup` untimed rounds first absorb one-off costs (lazy imports, first kernel calls).

    Args:
        contenders: Name to a function doing one complete run.
        rounds: Timed rounds (>= 1).
        warmup: Untimed rounds before them.
    Returns:
        Name to the median of its timed runs, in seconds.
    """
    if rounds < 1:
        raise ValueError(f"`rounds` must be an int >= 1. Received: rounds={rounds!r}")
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = _timed(contenders[name])
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def two_process_medians(script: str, *args: str) -> dict[str, float]:
    """Launch `script --worker FOLDER *args` on 2 processes under torchrun (one torch thread each) and return
    the medians (seconds by run name) its rank 0 wrote to `FOLDER/times.json`."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
        subprocess.run([*command, script, "--worker", folder, *args], check=True, env=env, capture_output=True)
        times: dict[str, float] = json.loads(Path(folder, "times.json").read_text())
    return times


def import_time(statement: str, runs: int) -> float:
    """The median wall time of `python -c statement` in `runs` fresh processes, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> str:
    try:
        return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "load average unknown"


def machine_facts() -> list[str]:
    """Lines describing the software and the machine, for the top of the table."""
    return [
        f"torch {torch.__version__}, torchmanager {torchmanager.__version__}, Python {platform.python_version()}",
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()} intra-op, "
        f"{torch.get_num_interop_threads()} inter-op; {_load()} (at start)",
    ]


def load_line() -> str:
    """The load average now (other work on the machine shows up here)."""
    return _load()
