"""Where and in which precision a manager's model runs: devices, DDP/DataParallel, compile, autocast, grad scaler.

Who owns what: `devices` knows which devices exist and moves data; `distributed` starts torchrun's
process group; `precision` maps the option to an autocast dtype. A `Placement` is one manager's
answer for its runs: it places the model for `fit`, `test` and `predict` and moves everything back
to the CPU afterwards (re-entrantly: a `test()` called from a callback during `fit` runs where `fit`
runs), and it owns autocast and the float16 gradient scaler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import torch

from . import devices, distributed
from .precision import autocast_dtype, check_precision, needs_grad_scaler

__all__ = ["Devices", "Placeable", "Placement"]

Devices: TypeAlias = devices.DeviceLike | Sequence[devices.DeviceLike] | None
"""The `device=`/`devices=` arguments: a device, its name, a CUDA index, or a list of them."""


class Placeable(Protocol):
    """What a `Placement` moves: a manager with its model."""

    model: torch.nn.Module

    @property
    def raw_model(self) -> torch.nn.Module: ...

    def to(self, device: torch.device) -> None: ...


class Placement:
    """The device(s) and precision of a manager's runs.

    Args:
        precision: "32" (float32), "bf16" (autocast to bfloat16) or "16-mixed" (autocast to float16
            with gradient scaling); Lightning's spellings are accepted too.
        compile: Run the model through `torch.compile` (True, or a dict of its keyword arguments).
    Raises:
        ValueError: An unknown `precision`.
        TypeError: `compile` is neither a bool nor a dict.
    """

    def __init__(self, precision: object = "32", compile: bool | Mapping[str, Any] = False) -> None:
        self.precision = check_precision(precision)
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(
                f"`compile` must be a bool or a dict of torch.compile keyword arguments. Received: compile={compile!r}"
            )
        self.compile = compile
        self.device = devices.CPU
        self.scaler: torch.amp.GradScaler | None = None
        self._scaler_state: dict[str, Any] | None = None  # restored from a checkpoint before the scaler exists
        self._depth = 0

    @property
    def precision(self) -> str:
        """The precision option (see the class)."""
        return self._precision

    @precision.setter
    def precision(self, precision: object) -> None:
        self._precision = check_precision(precision)
        self.autocast_dtype = autocast_dtype(self._precision)
        """The dtype forward passes autocast to, or None for float32 (kept: read on every batch)."""

    @property
    def active(self) -> bool:
        """Whether a run (`fit`, `test`, `predict`) is placed now."""
        return self._depth > 0

    @contextlib.contextmanager
    def place(
        self, manager: Placeable, device: Devices, devices_: Devices, use_multi_gpus: bool, *, empty_cache: bool = True
    ) -> Iterator[None]:
        """Run the body with the manager on its device(s), wrapped as the run needs; back on the CPU afterwards.

        Under torchrun each process uses its local device (unless `device` names one) and the model
        is wrapped in DistributedDataParallel; `use_multi_gpus` in one process wraps it in
        DataParallel. Inside a run already placed, the body runs where that run is.

        Raises:
            ValueError: The model has weights on the meta device, or a device argument is invalid.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        raw = manager.raw_model
        _check_not_meta(raw)
        manager.model = self._wrap(manager, raw, device, devices_, use_multi_gpus)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            manager.model = raw
            manager.to(devices.CPU)
            if empty_cache:
                devices.empty_cache()

    def _wrap(
        self, manager: Placeable, raw: torch.nn.Module, device: Devices, devices_: Devices, use_multi_gpus: bool
    ) -> torch.nn.Module:
        model: torch.nn.Module = raw
        if distributed.init_from_environment():
            main = (
                distributed.local_device()
                if device is None and devices_ is None
                else devices.select(device, devices_)[0]
            )
            manager.to(main)
            if distributed.is_distributed():
                model = torch.nn.parallel.DistributedDataParallel(
                    raw, device_ids=[main.index] if main.type == "cuda" else None
                )
        else:
            main, targets = devices.select(device, devices_)
            manager.to(main)
            if devices.use_data_parallel(targets, use_multi_gpus):
                model, _ = devices.data_parallel(raw, targets)
        if self.compile is not False:
            options = {} if self.compile is True else dict(self.compile)
            model = torch.compile(model, **options)  # type: ignore[assignment]
        return model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the precision's dtype on the run's device (nothing for float32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def start_grad_scaler(self) -> None:
        """Float16 training scales its gradients; the scaler is kept across `fit` calls and checkpoints."""
        if needs_grad_scaler(self.precision) and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
                self._scaler_state = None

    def grad_scaler_state(self) -> dict[str, Any] | None:
        """The scaler's state for a checkpoint (None without one)."""
        if self.scaler is not None:
            return self.scaler.state_dict()
        return self._scaler_state

    def load_grad_scaler_state(self, state: Mapping[str, Any] | None) -> None:
        """Restore the scaler (now, or when `fit` makes it on its device)."""
        if state is None:
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(dict(state))
        else:
            self._scaler_state = dict(state)


def _check_not_meta(model: torch.nn.Module) -> None:
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ValueError(
            "The `model` has weights on the 'meta' device (created without data); load its weights first, e.g. "
            "`model.load_state_dict(state_dict, assign=True)` (`to_empty()` would leave them uninitialised). "
            f"Received: model={type(model).__name__} on meta"
        )
