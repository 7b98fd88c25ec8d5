"""The `Strategy` seam: where and how the model runs (one device, DataParallel, DDP), one class each.

Who owns what: a strategy moves the raw model to its device and wraps it for training, unwraps it
after, gives the module to evaluate, controls gradient synchronisation inside an accumulation
window, clips gradients, and gives and loads the state dicts a checkpoint keeps, saying which
processes write it. The loop calls these and never names a wrapper. Precision (autocast, scaling)
is `precision`'s; choosing a strategy from `fit`'s arguments is this package's `__init__`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import torch

__all__ = ["OptimizerLike", "Strategy", "build_optimizer", "inner_name", "register_wrapper", "unwrap"]

OptimizerLike: TypeAlias = torch.optim.Optimizer | Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
"""An optimizer, or a factory building one from the parameters of the model as the strategy placed it."""

_WRAPPERS: list[type[torch.nn.Module]] = [torch.nn.DataParallel]
"""Module classes that wrap a model as `.module` (each strategy module registers its own)."""


def register_wrapper(wrapper: type[torch.nn.Module]) -> None:
    """Make `unwrap` see through `wrapper` (a module class holding the model as `.module`)."""
    if wrapper not in _WRAPPERS:
        _WRAPPERS.append(wrapper)


def inner_name(module: torch.nn.Module) -> str | None:
    """The attribute under which the wrapper `module` holds the module it wraps (`module`, `_orig_mod`), or None."""
    if isinstance(module, tuple(_WRAPPERS)):
        return "module"
    if isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):  # torch.compile's wrapper
        return "_orig_mod"
    return None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` without its DataParallel, DDP and `torch.compile` wrappers, however nested."""
    while (inner := inner_name(model)) is not None:
        model = getattr(model, inner)
    return model


def build_optimizer(model: torch.nn.Module, optimizer: OptimizerLike) -> torch.optim.Optimizer:
    """`optimizer` itself, or what the factory `optimizer` builds from `model.parameters()`.

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


class Strategy(abc.ABC):
    """One way of running a model in this process.

    Attributes:
        device: This process's main device (known once `setup` ran).
        sharded: Whether checkpoints are written by every process (each its shard) rather than by
            the main process alone.
        lockstep_evaluation: Whether every process must run a forward for each evaluation batch
            index (a sharded model gathers its parameters in each forward).
        applies_precision: Whether the strategy runs the forward in the precision's dtype itself
            (FSDP2's `MixedPrecisionPolicy`), so that no autocast context is entered.
    """

    sharded: bool = False
    lockstep_evaluation: bool = False
    applies_precision: bool = False

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    @abc.abstractmethod
    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Move the raw `model` to `device` and return the module the training forward calls."""

    def use_precision(self, precision: str) -> None:  # noqa: B027  (only a strategy applying it needs it)
        """Take the run's precision name before `setup` (a strategy that `applies_precision` maps it to its policy)."""

    def teardown(self, model: torch.nn.Module) -> torch.nn.Module:
        """The raw model of the module `setup` returned (called on every process after a run)."""
        return unwrap(model)

    @contextlib.contextmanager
    def evaluating(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The module to evaluate with while the body runs (here: the one `setup` returned)."""
        yield model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """The context of one backward: `sync=False` inside an accumulation window (no reduction across processes)."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the gradients' total L2 norm to `max_norm` (`torch.nn.utils.clip_grad_norm_`); returns the norm."""
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def model_state_dict(self, model: torch.nn.Module) -> dict[str, Any]:
        """The model's state under the plain module's keys (a submodule's wrappers left out too)."""
        from .plain_keys import plain_state_dict

        return plain_state_dict(unwrap(model))

    def load_model_state_dict(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        """Load `model_state_dict()`'s layout."""
        from .plain_keys import load_plain_state_dict

        load_plain_state_dict(unwrap(model), state)

    def optimizer_state_dict(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, stepped: bool | None = None
    ) -> dict[str, Any]:
        """The optimizer's state as a checkpoint keeps it (full, or this rank's shards when `sharded`); `stepped`:
        the layout to load a saved state into, with (True) or without (False) a state (a sharded checkpoint's)."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
    ) -> None:
        """Load `optimizer_state_dict()`'s layout."""
        optimizer.load_state_dict(dict(state))

    def prepare_optimizer(self, model: torch.nn.Module, optimizer: OptimizerLike) -> torch.optim.Optimizer:
        """The optimizer of `model` (the module `setup` returned): `optimizer` itself, or built by a factory of
        the parameters (`lambda params: torch.optim.AdamW(params, lr=1e-3)`), called with `model.parameters()`.

        Raises:
            TypeError: `optimizer` is neither an optimizer nor a callable returning one.
        """
        return build_optimizer(model, optimizer)

    def broadcast_buffers(self, model: torch.nn.Module) -> None:  # noqa: B027  (a no-op unless distributed)
        """Give every process the main process's buffers (nothing in one process)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device})"
