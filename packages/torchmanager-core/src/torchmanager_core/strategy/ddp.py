"""DistributedDataParallel: one process per device under torchrun, gradients averaged at each update.

The only module that names DDP. Evaluation runs the raw model (after rank 0's buffers are given to
every process; a compiled model's compiled module): DDP's forward may start
collectives that a process with fewer evaluation batches would never join. Inside an accumulation
window, backward runs under `no_sync` (found under a `torch.compile` wrapper too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from .base import Strategy, register_wrapper, unwrap

__all__ = ["DDP"]

register_wrapper(DistributedDataParallel)


class DDP(Strategy):
    """The model wrapped in `DistributedDataParallel`, one process per device.

    Args:
        **options: DDP's own keyword arguments, passed as they are (`find_unused_parameters=True` for a
            model with parameters that get no gradient in some steps, `static_graph`,
            `gradient_as_bucket_view`, `bucket_cap_mb`, `broadcast_buffers`...).
    Raises:
        TypeError: An option DDP does not take (`device_ids` and `module` are set here).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        for name in ("module", "device_ids", "output_device"):
            if name in options:
                raise TypeError(
                    f"`{name}` is set by the strategy from the run's device; leave it out. Received: {name}=..."
                )
        self.options = options

    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        self.device = device
        if not distributed.is_distributed():
            return model  # a group of one process: nothing to average
        if not any(p.requires_grad for p in model.parameters()):
            return model  # every parameter frozen (testing a trained model): DDP refuses such a module
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, **self.options)

    @contextlib.contextmanager
    def evaluating(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        wrapped = _find_ddp(model)  # under a `torch.compile` wrapper too: its forward would run DDP's
        if wrapped is not None:
            distributed.broadcast_buffers(wrapped.module)
            yield wrapped.module
        else:
            yield model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        wrapped = _find_ddp(model)
        if sync or wrapped is None:
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        distributed.broadcast_buffers(unwrap(model))


def _find_ddp(model: torch.nn.Module) -> DistributedDataParallel | None:
    """The DDP wrapper in `model` (it may sit under `torch.compile`'s), or None."""
    while not isinstance(model, DistributedDataParallel):
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return None
        model = inner
    return model
