"""Where and how a manager's model runs: a `Strategy` per way (one device, DataParallel, DDP, FSDP2), chosen per run.

Who owns what: each module of this package is one strategy; this one chooses a strategy from the
manager's `strategy=` option and the run's device arguments, and places a manager for a run
(`placed`): the model and everything with state moved to the device, the precision and the
strategy set up, `manager.model` set to the module to train and given back unwrapped on the CPU
after. It is the only place that sets `manager.model` for a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import torch

from .. import devices, distributed
from ..precision import Precision
from .base import OptimizerLike, Strategy, register_wrapper, unwrap
from .data_parallel import DataParallel
from .ddp import DDP
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
    "placed",
    "register_wrapper",
    "select",
    "unwrap",
]

Devices: TypeAlias = devices.DeviceLike | Sequence[devices.DeviceLike] | None
"""The `device=`/`devices=` arguments: a device, its name, a CUDA index, or a list of them."""

StrategyOption: TypeAlias = str | Strategy | None
"""The manager's `strategy=`: "auto" (or None), "single", "dp", "ddp", or a `Strategy` object."""

_NAMES = ("auto", "single", "dp", "ddp")


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
            "`strategy` must be a name ('auto', 'single', 'dp', 'ddp') or a Strategy object such as "
            f"`torchmanager_core.strategy.DDP(find_unused_parameters=True)`. Received: strategy={option!r}"
        )
    if option not in _NAMES:
        raise ValueError(
            f"`strategy` must be one of {list(_NAMES)} or a Strategy object. Received: strategy={option!r}"
        )
    return option


def select(
    option: StrategyOption, device: Devices, devices_: Devices, use_multi_gpus: bool
) -> tuple[Strategy, torch.device]:
    """The strategy of a run and its main device.

    Under torchrun (the process group is started here) each process takes its local device unless
    `device` names one, and "auto" is DDP; in one process "auto" is DataParallel when
    `use_multi_gpus` and several CUDA devices are at hand, else one device.
    """
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
    _strategy: Strategy | None

    @property
    def raw_model(self) -> torch.nn.Module: ...

    def to(self, device: torch.device) -> None: ...


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
    where that run is.

    Raises:
        ValueError: The model has weights on the meta device, or a device argument is invalid.
    """
    if manager._strategy is not None:
        yield manager._strategy
        return
    raw = manager.raw_model
    _check_not_meta(raw)
    strategy, main = select(option, device, devices_, use_multi_gpus)
    manager.to(main)
    precision.setup(raw, main)
    model = strategy.setup(raw, main)
    if compile is not False:
        model = torch.compile(model, **({} if compile is True else dict(compile)))  # type: ignore[assignment]
    manager.model, manager._strategy = model, strategy
    try:
        yield strategy
    finally:
        manager.model, manager._strategy = strategy.teardown(model), None
        manager.to(devices.CPU)
        if empty_cache:
            devices.empty_cache()


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
