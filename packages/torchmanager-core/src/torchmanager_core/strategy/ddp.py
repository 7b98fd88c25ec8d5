"""DistributedDataParallel: one process per device under torchrun, gradients averaged at each update.

The only module that names DDP. Evaluation runs the raw model (after rank 0's buffers are given to
every process; a compiled model's compiled module): DDP's forward may start collectives that a
process with fewer evaluation batches would never join. Inside an accumulation window, backward runs
under `no_sync` (found under a `torch.compile` wrapper too). DDP's errors about the model's gradients
name the strategy's option that fixes them (`ModelError`).

A model that is a `ModuleDict` (several models trained together, a GAN's generator and discriminator)
has each of its models wrapped apart (`Wrapped`): a step of the user's reaches one as
`manager.model["gen"]`, and its gradients are averaged when that model's backward runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..errors import ModelError
from .base import Strategy, register_wrapper, unwrap

__all__ = ["DDP", "Wrapped"]

register_wrapper(DistributedDataParallel)


class Wrapped(torch.nn.ModuleDict):
    """A `ModuleDict` model's models, each wrapped in DDP (those with trainable parameters), by the same names.

    Attributes:
        module: The user's `ModuleDict` (what checkpoints and `raw_model` see).
    """

    module: torch.nn.ModuleDict

    def __init__(self, model: torch.nn.ModuleDict, wrap: Any) -> None:
        super().__init__({name: wrap(child) for name, child in model.items()})
        self.__dict__["module"] = model  # not a submodule: its parameters are the wrapped models'

    def wrapped(self) -> list[DistributedDataParallel]:
        return [child for child in self.values() if isinstance(child, DistributedDataParallel)]


register_wrapper(Wrapped)


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

        def wrap(module: torch.nn.Module) -> torch.nn.Module:
            if not any(p.requires_grad for p in module.parameters()):
                return module
            return _Explained(module, device_ids=ids, **self.options)

        return Wrapped(model, wrap) if type(model) is torch.nn.ModuleDict else wrap(model)

    @contextlib.contextmanager
    def evaluating(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        if isinstance(model, Wrapped):
            distributed.broadcast_buffers(model.module)
            yield model.module
            return
        wrapped = _find_ddp(model)  # under a `torch.compile` wrapper too: its forward would run DDP's
        if wrapped is not None:
            distributed.broadcast_buffers(wrapped.module)
            yield wrapped.module
        else:
            yield model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        if sync:
            return contextlib.nullcontext()
        wrapped = model.wrapped() if isinstance(model, Wrapped) else [_find_ddp(model)]
        if not any(wrapped):
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for ddp in wrapped:
            if ddp is not None:
                stack.enter_context(ddp.no_sync())
        return stack

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        distributed.broadcast_buffers(unwrap(model))


class _Explained(DistributedDataParallel):
    """DDP whose errors about the model's gradients say which option of `strategy=DDP(...)` fixes them."""

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        try:
            return super().forward(*inputs, **kwargs)  # type: ignore[no-untyped-call]  # untyped in torch
        except RuntimeError as error:
            explained = _explain(error, self)
            if explained is None:
                raise
            raise explained from error


_UNUSED = "Expected to have finished reduction in the prior iteration"
_STATIC_CHANGED = "not compatible with static_graph set to True"
_READY_TWICE = "Expected to mark a variable ready only once"
_INDICES = re.compile(r"Parameter indices which did not receive grad for rank \d+: ([\d ]+)")


def _explain(error: RuntimeError, model: DistributedDataParallel) -> ModelError | None:
    """A `ModelError` saying what DDP's `error` means and which strategy option fixes it; None for other errors."""
    text = str(error)
    if _UNUSED in text and _STATIC_CHANGED in text:
        what, fix = "a parameter that got a gradient in one step got none in the next", "static_graph=False"
    elif _UNUSED in text:
        what, fix = "a parameter of the model got no gradient in the last step", "find_unused_parameters=True"
    elif _READY_TWICE in text:
        what, fix = (
            "a parameter's gradient was made twice in one step (a part of the model ran twice)",
            "static_graph=True",
        )
    else:
        return None
    found = _INDICES.search(text)
    trainable = [name for name, parameter in model.module.named_parameters() if parameter.requires_grad]
    names = [trainable[int(i)] for i in found.group(1).split() if int(i) < len(trainable)] if found else []
    received = f"parameters without a gradient: {names}" if names else f"strategy=DDP({_options(model)})"
    return ModelError(
        f"Under torchrun (DistributedDataParallel), {what}, and DDP averages every parameter's gradient at each "
        f"step: give the manager `strategy=torchmanager_core.strategy.DDP({fix})` (DDP's own option), or freeze "
        f"what should not train (`requires_grad_(False)`). Received: {received}"
    )


def _options(model: DistributedDataParallel) -> str:
    """The DDP options `model` runs with that these errors are about."""
    return f"find_unused_parameters={model.find_unused_parameters}, static_graph={model.static_graph}"


def _find_ddp(model: torch.nn.Module) -> DistributedDataParallel | None:
    """The DDP wrapper in `model` (it may sit under `torch.compile`'s), or None."""
    while not isinstance(model, DistributedDataParallel):
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return None
        model = inner
    return model
