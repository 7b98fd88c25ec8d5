"""The `Strategy` seam: where and how the model runs (one device, DataParallel, DDP, FSDP2), one class each.

Who owns what: a strategy wraps the raw model for training and unwraps it, gives the model to evaluate,
controls gradient synchronisation under accumulation, clips gradients, and gives and loads the state dicts
a checkpoint keeps (model and optimizers), saying which processes write it. The loop calls these and never
names DDP, DataParallel or FSDP. Precision (autocast, scaling) is the `precision` module's.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import torch

__all__ = ["OptimizerLike", "Strategy", "unwrap"]

OptimizerLike: TypeAlias = torch.optim.Optimizer | Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
"""An optimizer, or a factory building one from the parameters of the model as the strategy placed it."""


class Strategy(abc.ABC):
    """One way of running a model in this process.

    Attributes:
        device: This process's main device (set by `setup`).
        sharded: Whether checkpoints are folders written by every process (each its shard), rather than one
            file written by the main process.
        lockstep_evaluation: Whether every process must run a forward for each evaluation batch index (a
            sharded model gathers its parameters in each forward): a process with fewer batches then runs a
            stand-in forward whose output is discarded.
    """

    device: torch.device = torch.device("cpu")
    sharded: bool = False
    lockstep_evaluation: bool = False

    @abc.abstractmethod
    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Move `model` (the raw model) to `device` and return the module the training forward calls."""

    def teardown(self, model: torch.nn.Module) -> torch.nn.Module:
        """After a run: the raw model (unwrapped) to keep; called on every process."""
        return unwrap(model)

    @contextlib.contextmanager
    def evaluating(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The module to evaluate with while the body runs (default: the training module itself)."""
        yield model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """A context for one backward: `sync=False` inside an accumulation window (no cross-process reduction)."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the gradients' total L2 norm over every process's parameters to `max_norm`; returns the norm."""
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def model_state_dict(self, model: torch.nn.Module) -> dict[str, Any]:
        """The model's state under the plain module's keys (full, or this rank's shards when `sharded`)."""
        return unwrap(model).state_dict()

    def load_model_state_dict(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        unwrap(model).load_state_dict(state)

    def optimizer_state_dict(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
    ) -> None:
        optimizer.load_state_dict(dict(state))

    def prepare_optimizer(self, model: torch.nn.Module, optimizer: OptimizerLike) -> torch.optim.Optimizer:
        """The optimizer of `model` (the module `setup` returned): `optimizer` itself, or built by a factory of
        the parameters (`lambda params: torch.optim.AdamW(params, lr=1e-3)`), called with `model.parameters()`.

        Raises:
            TypeError: `optimizer` is neither an optimizer nor a callable returning one.
        """
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        built = optimizer(model.parameters()) if callable(optimizer) else optimizer
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(
                "`optimizer` must be a torch.optim.Optimizer or a function of the model's parameters returning one. "
                f"Received: optimizer={type(built).__name__}"
            )
        return built


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` without DataParallel/DDP/torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
