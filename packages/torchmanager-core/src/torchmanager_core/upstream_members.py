"""The members upstream torchmanager 1.5's managers had beyond ours, for code written for it.

Who owns what: `Manager` inherits them; each is thin, defined on what the manager already holds.
Upstream's class names (`TrainingManager`, `BaseTrainingManager`, ...) are in `compat`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch

from . import devices
from .epoch_values import EpochValues
from .precision import FP16Mixed
from .tracking import to_floats
from .version import API_VERSION, Version

__all__ = ["UpstreamMembers"]

S = TypeVar("S", bound="_Manager")


class _Manager(Protocol):
    """What these members read of the manager."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    _loss_fn: Callable[..., Any] | dict[str, Callable[..., Any]] | None
    _metric_fns: dict[str, Callable[..., Any]]
    _passes: list[EpochValues]
    _last_values: EpochValues

    @property
    def raw_model(self) -> torch.nn.Module: ...

    def to(self, device: torch.device) -> None: ...

    def reset_metrics(self) -> None: ...

    def _stream_modules(self) -> Iterator[torch.nn.Module]: ...


class UpstreamMembers:
    """Upstream 1.5's extra members of a manager (see the module docstring)."""

    version: Version = API_VERSION
    """The API version of the manager (upstream's attribute; `convert` had version migrations to do)."""

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The float16 gradient scaler of `precision="16-mixed"` (made by the first `fit`); settable, as upstream's subclasses do."""
        if isinstance(self.__dict__.get("_precision"), FP16Mixed):
            return self._precision.scaler  # type: ignore[attr-defined,no-any-return]
        return self.__dict__.get("_scaler")

    @scaler.setter
    def scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        if isinstance(self.__dict__.get("_precision"), FP16Mixed):
            self._precision.scaler = scaler  # type: ignore[attr-defined]
        else:
            self.__dict__["_scaler"] = scaler

    @property
    def compiled(self: _Manager) -> bool:
        """Whether the manager can train: it has a `loss_fn` and an `optimizer` (upstream's check)."""
        return self._loss_fn is not None and self.optimizer is not None

    @property
    def compiled_optimizer(self: _Manager) -> torch.optim.Optimizer:
        """The optimizer (upstream's name).

        Raises:
            ValueError: The manager has no optimizer.
        """
        if self.optimizer is None:
            raise ValueError(
                f"The manager has no optimizer: pass one to {type(self).__name__}(model, optimizer, ...). Received: optimizer=None"
            )
        return self.optimizer

    @property
    def raw_loss_fn(self: _Manager) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
        """The loss without a DataParallel wrapper: here, `loss_fn` (losses are never wrapped)."""
        return self._loss_fn

    @property
    def loss_dict(self: _Manager) -> dict[str, Callable[..., Any]]:
        """The losses by summary name: {"loss": loss_fn} for one loss, {"<name>_loss": ...} for a dict, and the
        losses given as metrics (each reported as `<name>_loss`), as upstream's listed them."""
        losses: dict[str, Callable[..., Any]] = {}
        if isinstance(self._loss_fn, dict):
            losses = {f"{name}_loss": fn for name, fn in self._loss_fn.items()}
        elif self._loss_fn is not None:
            losses = {"loss": self._loss_fn}
        losses.update((name, fn) for name, fn in self._metric_fns.items() if name.endswith("_loss"))
        return losses

    @loss_dict.setter
    def loss_dict(self: _Manager, losses: Mapping[str, Callable[..., Any]]) -> None:
        """Set the losses as a dict summed (upstream's setter): `<name>_loss` keys report as themselves."""
        manager: Any = self  # the manager's `loss_fn` setter checks and compiles the dict
        manager.loss_fn = {name.removesuffix("_loss") or name: fn for name, fn in losses.items()}

    @property
    def summary(self: _Manager) -> dict[str, float]:
        """The values of the last (or running) pass so far, as floats, this process's share (reading them syncs)."""
        values = self._passes[-1] if self._passes else self._last_values
        return to_floats({name: value for name, value in values.tensors().items() if value.numel() == 1})

    def data_parallel(
        self: _Manager,
        target_devices: Sequence[torch.device],
        *,
        parallel_type: type[torch.nn.DataParallel[Any]] = torch.nn.DataParallel,
    ) -> bool:
        """Wrap the model in `parallel_type` over the CUDA `target_devices`; whether it is now parallel.

        `fit(..., use_multi_gpus=True)` does it itself; torchrun with DDP is the faster way.
        """
        cuda = [device for device in target_devices if device.type == "cuda"]
        if len(cuda) < 2:
            return False
        self.model, parallel = devices.data_parallel(self.raw_model, cuda, parallel_type=parallel_type)
        return parallel

    def reset(self: _Manager, cpu: torch.device = devices.CPU) -> None:
        """Unwrap the model and move the model, losses, metrics and optimizer state to `cpu`; empty the CUDA cache."""
        self.model = self.raw_model
        self.to(cpu)
        devices.empty_cache()

    def convert(self) -> None:
        """Upstream's migration of a manager loaded from an older version: nothing to migrate here."""

    def state_dict(self: _Manager) -> dict[str, Any]:
        """The model, optimizer, loss and metric state dicts, as upstream's `state_dict` gave them."""
        modules = {name: fn for name, fn in self._metric_fns.items() if isinstance(fn, torch.nn.Module)}
        loss = self._loss_fn
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "loss_fn": loss.state_dict() if isinstance(loss, torch.nn.Module) else None,
            "metrics": {name: fn.state_dict() for name, fn in modules.items()},
        }

    def load_state_dict(self: _Manager, state_dict: Mapping[str, Any]) -> None:
        """Load what `state_dict` gave (upstream's layout)."""
        self.raw_model.load_state_dict(state_dict["model"])
        if self.optimizer is not None and state_dict.get("optimizer") is not None:
            self.optimizer.load_state_dict(state_dict["optimizer"])
        if isinstance(self._loss_fn, torch.nn.Module) and state_dict.get("loss_fn") is not None:
            self._loss_fn.load_state_dict(state_dict["loss_fn"])
        for name, state in (state_dict.get("metrics") or {}).items():
            fn = self._metric_fns.get(name)
            if isinstance(fn, torch.nn.Module):
                fn.load_state_dict(state)

    def to_checkpoint(self) -> Any:
        """Upstream's `Checkpoint` object pickled the whole manager; it is not made here.

        Raises:
            NotImplementedError: Always, with the replacement.
        """
        raise NotImplementedError(
            "`to_checkpoint` made upstream's `Checkpoint` object, which pickled the whole manager; save a checkpoint "
            "with `manager.save_checkpoint(path)` and restore it with `Manager.from_checkpoint(path, model=...)` "
            "(state dicts only: loading runs no code). Received: to_checkpoint()"
        )

    def __enter__(self: S) -> S:
        """Upstream's training mode: the model, losses and metrics in train mode, their values reset."""
        for module in (self.model, *self._stream_modules()):
            module.train()
        self.reset_metrics()
        return self

    def __exit__(self: _Manager, *exc: object) -> None:
        """Upstream's end of training: the model, losses and metrics in eval mode."""
        for module in (self.model, *self._stream_modules()):
            module.eval()
