"""Checks and defaults shared by `Dataset`, `batched` and `distribute` (one place for each rule)."""

from __future__ import annotations

import os

import torch

__all__ = [
    "CPU",
    "DEFAULT_TIMEOUT",
    "check_batch_size",
    "check_num_workers",
    "check_timeout",
    "check_world",
    "default_num_workers",
    "pin_memory_for",
    "to_device",
]

CPU = torch.device("cpu")
"""The default device of the loading options."""

DEFAULT_TIMEOUT = 600.0
"""Seconds a batch may take to come from the loader processes: a stuck worker ends the run with an error long
before a process group's 30-minute collective timeout, and no real batch takes this long."""

MAX_DEFAULT_WORKERS = 8
"""Ceiling of the default worker count: more processes rarely load faster and each holds a copy of the data."""


def check_batch_size(batch_size: object) -> int:
    """Returns `batch_size` if it is a positive int; raises TypeError/ValueError otherwise."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise TypeError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    return batch_size


def check_num_workers(num_workers: object) -> int:
    """Returns `num_workers` resolved: None gives `default_num_workers()`, an int must be >= 0."""
    if num_workers is None:
        return default_num_workers()
    if not isinstance(num_workers, int) or isinstance(num_workers, bool):
        raise TypeError(f"`num_workers` must be an int >= 0 or None. Received: num_workers={num_workers!r}")
    if num_workers < 0:
        raise ValueError(f"`num_workers` must be an int >= 0 or None. Received: num_workers={num_workers!r}")
    return num_workers


def default_num_workers() -> int:
    """Loader processes to use by default: the CPUs this process may run on, less one for the
    main process, at most `MAX_DEFAULT_WORKERS`.

    Upstream used `os.cpu_count()`, which counts the host's CPUs rather than the container's and
    so could start dozens of workers on a 2-core allowance.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS or Windows
        usable = os.cpu_count() or 1
    return max(0, min(usable - 1, MAX_DEFAULT_WORKERS))


def to_device(device: object) -> torch.device:
    """Returns `device` as a `torch.device`; accepts a device or a string such as "cuda:0"."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise ValueError(
                f"`device` must name a torch device such as 'cpu' or 'cuda:0'. Received: device={device!r}"
            ) from e
    raise TypeError(f"`device` must be a torch.device or a string such as 'cuda:0'. Received: device={device!r}")


def pin_memory_for(device: torch.device) -> bool:
    """Whether batches bound for `device` should be pinned: only for CUDA targets with CUDA present."""
    return device.type == "cuda" and torch.cuda.is_available()


def check_world(world_size: int, rank: int) -> None:
    """Raises unless `world_size` is a positive int and `rank` an int in `[0, world_size)`."""
    for name, value in (("world_size", world_size), ("rank", rank)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an int. Received: {name}={value!r}")
    if world_size <= 0:
        raise ValueError(f"`world_size` must be a positive int. Received: world_size={world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be an int in [0, world_size). Received: rank={rank}, world_size={world_size}")


def check_timeout(timeout: object) -> float:
    """Returns `timeout` (seconds a batch may take to come from loader processes) if it is a number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(
            f"`timeout` must be a number of seconds > 0 (a batch waited for longer ends the run with an error). "
            f"Received: timeout={timeout!r}"
        )
    return float(timeout)
