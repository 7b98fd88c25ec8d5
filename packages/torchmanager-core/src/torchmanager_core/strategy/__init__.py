"""Where and how a manager's model runs: a `Strategy` per way (one device, DataParallel, DDP, FSDP2), chosen per run.

Who owns what: each module of this package is one strategy; this one chooses a strategy from the
manager's `strategy=` option, the model (one the user sharded with `fully_shard` runs under FSDP2)
and the run's device arguments, and places a manager for a run (`placed`): the model and everything
with state moved to the device, the precision and the strategy set up, the optimizer built (from a
factory of the parameters) or pointed at the placed parameters, `manager.model` set to the module to
train (the user's `torch.compile` kept) and given back after (unwrapped on the CPU, or sharded where
it is). It is the only place that sets `manager.model` for a run. FSDP2 (`fsdp`) is imported only
when a run uses it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import torch

from .. import devices, distributed
from ..precision import Precision
from .base import OptimizerLike, Strategy, build_optimizer, inner_name, register_wrapper, unwrap
from .data_parallel import DataParallel
from .ddp import DDP
from .plain_keys import load_plain_state_dict, plain_state_dict
from .single import SingleDevice

__all__ = [
    "DDP",
    "DataParallel",
    "Devices",
    "OptimizerLike",
    "SingleDevice",
    "Strategy",
    "StrategyOption",
    "check_strategy",
    "evaluated",
    "is_fully_sharded",
    "optimizer_or_factory",
    "load_plain_state_dict",
    "placed",
    "plain_state_dict",
    "register_wrapper",
    "select",
    "shards_model",
    "unwrap",
]

Devices: TypeAlias = devices.DeviceLike | Sequence[devices.DeviceLike] | None
"""The `device=`/`devices=` arguments: a device, its name, a CUDA index, or a list of them."""

StrategyOption: TypeAlias = str | Strategy | None
"""The manager's `strategy=`: "auto" (or None), "single", "dp", "ddp", "fsdp", or a `Strategy` object."""

_NAMES = ("auto", "single", "dp", "ddp", "fsdp")


def is_fully_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` (under any DDP or `torch.compile` wrapper) was sharded with `fully_shard` at its root.

    Neither FSDP2 nor the FSDP2 strategy (which imports `torch.distributed.checkpoint`) is imported for it: a
    model can only be sharded once FSDP2 was.
    """
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(unwrap(model), fsdp.FSDPModule)


def shards_model(option: StrategyOption, model: torch.nn.Module) -> bool:
    """Whether a run with the `strategy=` option `option` shards `model` when it is placed (FSDP2 on a model
    not sharded yet): then an optimizer factory waits for the shards."""
    sharding = option == "fsdp" or (isinstance(option, Strategy) and option.sharded)
    return sharding and not is_fully_sharded(model)


def check_strategy(option: object) -> StrategyOption:
    """`option` if it names a strategy or is one.

    Raises:
        ValueError: An unknown name.
        TypeError: Neither a name nor a `Strategy`.
    """
    if option is None or isinstance(option, Strategy):
        return option
    if not isinstance(option, str):
        raise TypeError(
            "`strategy` must be a name ('auto', 'single', 'dp', 'ddp', 'fsdp') or a Strategy object such as "
            f"`torchmanager_core.strategy.DDP(find_unused_parameters=True)`. Received: strategy={option!r}"
        )
    if option not in _NAMES:
        raise ValueError(
            f"`strategy` must be one of {list(_NAMES)} or a Strategy object. Received: strategy={option!r}"
        )
    return option


def optimizer_or_factory(
    model: torch.nn.Module, optimizer: OptimizerLike | None, strategy: StrategyOption
) -> tuple[torch.optim.Optimizer | None, Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer] | None]:
    """(the optimizer, the factory still to call) of a manager given `optimizer` and `strategy=`: a factory is
    called now, with the model's parameters, unless the run will shard the model (then with the shards, when
    `placed` places it)."""
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return optimizer, None
    if shards_model(strategy, unwrap(model)):
        return None, optimizer
    return build_optimizer(model, optimizer), None


def select(
    option: StrategyOption,
    device: Devices,
    devices_: Devices,
    use_multi_gpus: bool,
    model: torch.nn.Module | None = None,
) -> tuple[Strategy, torch.device]:
    """The strategy of a run and its main device.

    Under torchrun (the process group is started here) each process takes its local device unless
    `device` names one, and "auto" is FSDP2 for a `model` the user sharded with `fully_shard`, else
    DDP; in one process "auto" is DataParallel when `use_multi_gpus` and several CUDA devices are at
    hand, else one device. "fsdp" is FSDP2 (outside torchrun its `setup` says how to launch).
    """
    if option == "fsdp" or (option in (None, "auto") and model is not None and is_fully_sharded(model)):
        from .fsdp import FSDP2Strategy

        option = FSDP2Strategy()
    if distributed.init_from_environment():
        main = (
            distributed.local_device() if device is None and devices_ is None else devices.select(device, devices_)[0]
        )
        if isinstance(option, Strategy):
            return option, main
        return (SingleDevice() if option == "single" else DDP()), main
    main, targets = devices.select(device, devices_)
    if isinstance(option, Strategy):
        return option, main
    if option == "dp" or (option in (None, "auto") and devices.use_data_parallel(targets, use_multi_gpus)):
        return DataParallel(targets), main
    return SingleDevice(), main


class Placeable(Protocol):
    """What `placed` moves and sets: a manager."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    _optimizer_factory: Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer] | None
    _strategy: Strategy | None

    @property
    def raw_model(self) -> torch.nn.Module: ...

    def to(self, device: torch.device) -> None: ...

    def _stream_objects(self) -> Iterable[Any]: ...


@contextlib.contextmanager
def placed(
    manager: Placeable,
    option: StrategyOption,
    precision: Precision,
    compile: bool | Mapping[str, Any],
    device: Devices,
    devices_: Devices,
    use_multi_gpus: bool,
    *,
    empty_cache: bool = True,
) -> Iterator[Strategy]:
    """Run the body with the manager placed by its strategy; afterwards its raw model is back on the CPU.

    Inside a run already placed (a `test()` called from a callback during `fit`), the body runs
    where that run is. A model the user compiled (`torch.compile(model)`) trains compiled: the
    strategy places and wraps the compiled module (DDP around it: its forward is the compiled one, its
    gradient sync DDP's), and afterwards `manager.model` is the user's compiled module again; the
    `compile=` option compiles the raw model the same way (DDP's own forward does not compile). A sharding strategy
    (FSDP2) takes the model where it is (the meta device too) and leaves it sharded on its device.

    Raises:
        ValueError: The model has weights on the meta device (but for FSDP2), or a device argument is invalid.
    """
    if manager._strategy is not None:
        yield manager._strategy
        return
    given, raw = manager.model, manager.raw_model
    strategy, main = select(option, device, devices_, use_multi_gpus, raw)
    if strategy.sharded:
        _move_streams(manager, main)  # the strategy moves (and shards) the model itself
    else:
        _check_not_meta(raw)
        manager.to(main)
    strategy.use_precision(precision.name)
    precision.setup(raw, main, autocast=not strategy.applies_precision)
    compiled = given if inner_name(given) == "_orig_mod" else None  # the user's `torch.compile(model)`
    if compiled is None and compile is not False:  # the `compile=` option: compiled as the user would
        compiled = torch.compile(raw, **({} if compile is True else dict(compile)))  # type: ignore[assignment]
    model = strategy.setup(raw if compiled is None else compiled, main)
    if compiled is not None and model is raw:
        model = compiled  # sharded in place (FSDP2): the compiled module runs the sharded model
    manager.model, manager._strategy = model, strategy
    _prepare_optimizer(manager, strategy, model)
    try:
        yield strategy
    finally:
        placed_model = strategy.teardown(model)
        manager.model, manager._strategy = (given if unwrap(given) is placed_model else placed_model), None
        if strategy.sharded:
            _move_streams(manager, devices.CPU)
        else:
            manager.to(devices.CPU)
        if empty_cache:
            devices.empty_cache()


def _prepare_optimizer(manager: Placeable, strategy: Strategy, model: torch.nn.Module) -> None:
    """Build the optimizer from its factory over the placed parameters, or point a given one at them (FSDP2)."""
    option: OptimizerLike | None = manager.optimizer if manager.optimizer is not None else manager._optimizer_factory
    if option is None:
        return
    manager.optimizer = strategy.prepare_optimizer(model, option)
    manager._optimizer_factory = None


def _move_streams(manager: Placeable, device: torch.device) -> None:
    """Move the losses and metrics, not the model (a sharding strategy places it; its optimizer state follows it)."""
    for fn in manager._stream_objects():
        if isinstance(fn, torch.nn.Module) or callable(getattr(fn, "to", None)):
            fn.to(device)


@contextlib.contextmanager
def evaluated(manager: Placeable) -> Iterator[None]:
    """In the body, `manager.model` is the module its run's strategy evaluates with (DDP's raw module)."""
    strategy, model = manager._strategy, manager.model
    if strategy is None:
        yield
        return
    with strategy.evaluating(model) as evaluated_model:
        manager.model = evaluated_model
        try:
            yield
        finally:
            manager.model = model


def _check_not_meta(model: torch.nn.Module) -> None:
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ValueError(
            "The `model` has weights on the 'meta' device (created without data); load its weights first, e.g. "
            "`model.load_state_dict(state_dict, assign=True)` (`to_empty()` would leave them uninitialised). "
            f"Received: model={type(model).__name__} on meta"
        )
