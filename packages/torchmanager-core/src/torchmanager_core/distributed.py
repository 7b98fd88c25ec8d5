"""The distributed runtime: which process this is, and the collective operations the managers use.

Who owns what: this module answers "am I rank 0?", initialises the process group when the
script was started by `torchrun`, and reduces tensors across ranks; the managers decide when.
Without `torch.distributed` initialised, every function behaves as a single process would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["barrier", "get_rank", "get_world_size", "is_distributed", "is_main_process"]


def is_distributed() -> bool:
    """Whether a default process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes files, logs and progress: rank 0, or the only process."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes in place and return it (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
