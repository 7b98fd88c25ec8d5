"""A manager's checkpoints: what goes into the file, and how a manager is restored from it.

Who owns what: `checkpoint` owns the bytes (atomic writes, safe loading, format version); this
module owns the payload: model and optimizer state dicts, loss and metric states, epoch and step,
the random generators (for an exact resume) and the state the running callbacks add.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from . import checkpoint, distributed
from .random import get_rng_state

if TYPE_CHECKING:
    from .callbacks import CallbackList
    from .compiled import CompiledLoss, CompiledMetrics
    from .tracking import MeanTracker

__all__ = ["Checkpointing"]

M = TypeVar("M", bound="Checkpointing")
PathLike = str | os.PathLike[str]


def _module_states(fns: Mapping[str, Any]) -> dict[str, Any]:
    return {name: fn.state_dict() for name, fn in fns.items() if isinstance(fn, torch.nn.Module)}


def _load_module_states(fns: Mapping[str, Any], states: Mapping[str, Any]) -> None:
    """Restore the running states of the losses or metrics this manager has (others are skipped:
    they only hold the interrupted epoch's running values)."""
    for name, state in states.items():
        fn = fns.get(name)
        if isinstance(fn, torch.nn.Module):
            fn.load_state_dict(state)


class Checkpointing:
    """Save and restore everything that decides the rest of a run (mixed into the managers)."""

    if TYPE_CHECKING:
        optimizer: torch.optim.Optimizer | None
        compiled_losses: CompiledLoss | None
        compiled_metrics: CompiledMetrics
        _extras: MeanTracker
        _current_epoch: int
        _epoch_step: int
        _epoch_rng: dict[str, Any] | None
        _resume_rng: dict[str, Any] | None
        _scaler_state: dict[str, Any] | None
        scaler: torch.amp.GradScaler | None
        _callbacks: CallbackList

        @property
        def raw_model(self) -> torch.nn.Module: ...

        def __init__(self, model: torch.nn.Module, optimizer: Any = None, loss_fn: Any = None, metrics: Any = None) -> None: ...

    def checkpoint_payload(self) -> dict[str, Any]:
        """The checkpoint's content as state dicts and plain values (loadable without running code)."""
        model = self.raw_model
        try:
            structure: torch.Tensor | None = checkpoint.pack_model(model)
        except TypeError:
            structure = None  # e.g. a class defined in a function: `from_checkpoint` then needs `model=`
        payload: dict[str, Any] = {
            "model": model.state_dict(),
            "model_structure": structure,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "optimizer_class": _qualified_name(self.optimizer),
            "epoch": getattr(self, "_current_epoch", 0),
            "step": getattr(self, "_epoch_step", 0),
            "rng": get_rng_state(),
            "epoch_rng": getattr(self, "_epoch_rng", None),
            "metrics": _module_states(self.compiled_metrics.fns),
            "streams": {"metrics": self.compiled_metrics.tracker.state_dict(), "extras": self._extras.state_dict()},
            "calls": {"metrics": self.compiled_metrics.calls},
            "callbacks": {},
        }
        scaler = getattr(self, "scaler", None)
        if scaler is not None:
            payload["grad_scaler"] = scaler.state_dict()
        if self.compiled_losses is not None:
            payload["loss_fn"] = _module_states(self.compiled_losses.fns)
            payload["streams"]["loss_fn"] = self.compiled_losses.tracker.state_dict()
            payload["calls"]["loss_fn"] = self.compiled_losses.calls
        callbacks = getattr(self, "_callbacks", None)
        if callbacks is not None:
            callbacks.on_save_checkpoint(payload)
        return payload

    def save_checkpoint(self, path: PathLike) -> None:
        """Write a checkpoint of the run atomically (a crash leaves any previous file intact).

        Only the main process writes; the others wait at a barrier when distributed.
        """
        payload = self.checkpoint_payload()
        if distributed.is_main_process():
            checkpoint.save(payload, path)
        distributed.barrier()

    def load_checkpoint(self, path: PathLike, *, map_location: Any = None, trusted: bool = False) -> dict[str, Any]:
        """Restore the model, optimizer, losses, metrics, epoch, step and random generators from `path`.

        Returns:
            The checkpoint's payload (callbacks read their state from it).
        Raises:
            CheckpointError: The file is not a checkpoint of ours, is corrupt, or holds another model.
        """
        payload = checkpoint.load(path, map_location=map_location or "cpu", trusted=trusted)
        self.restore(payload, source=os.fspath(path))
        return payload

    def restore(self, payload: Mapping[str, Any], *, source: str = "the checkpoint") -> None:
        """Put a checkpoint payload back into this manager (what `load_checkpoint` does after reading)."""
        try:
            self.raw_model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise checkpoint.CheckpointError(
                f"`{source}` holds the weights of a different model ({str(error).splitlines()[0]}); load it into the "
                f"model architecture that saved it. Received: model={type(self.raw_model).__name__}"
            ) from error
        if self.optimizer is not None and payload.get("optimizer") is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
        _load_module_states(self.compiled_metrics.fns, payload.get("metrics", {}))
        streams, calls = payload.get("streams", {}), payload.get("calls", {})
        if "metrics" in streams:
            self.compiled_metrics.tracker.load_state_dict(streams["metrics"])
            self.compiled_metrics.calls = int(calls.get("metrics", 0))
        if "extras" in streams:
            self._extras.load_state_dict(streams["extras"])
        if self.compiled_losses is not None and "loss_fn" in payload:
            _load_module_states(self.compiled_losses.fns, payload["loss_fn"])
            self.compiled_losses.tracker.load_state_dict(streams.get("loss_fn", {"totals": {}, "counts": {}}))
            self.compiled_losses.calls = int(calls.get("loss_fn", 0))
        if payload.get("grad_scaler") is not None and hasattr(self, "scaler"):
            if self.scaler is not None:
                self.scaler.load_state_dict(payload["grad_scaler"])
            else:
                self._scaler_state = payload["grad_scaler"]
        if hasattr(self, "_current_epoch"):
            self._current_epoch = int(payload.get("epoch", 0))
            self._epoch_step = int(payload.get("step", 0))
            self._epoch_rng = payload.get("epoch_rng")
            self._resume_rng = payload.get("rng")

    @classmethod
    def from_checkpoint(
        cls: type[M],
        path: PathLike,
        *,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Any = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        map_location: Any = None,
        trusted: bool = False,
    ) -> M:
        """A manager restored from a checkpoint, loading no code from the file unless `trusted`.

        Args:
            path: The checkpoint file.
            model: The model to load the weights into. Without it, the model object is rebuilt
                from the file, which runs code from it: only with `trusted=True`.
            optimizer: The optimizer to restore; by default a `torch.optim` optimizer of the saved
                class is rebuilt over the model's parameters.
            loss_fn: The losses of the manager (their saved states are restored).
            metrics: The metrics of the manager (their saved states are restored).
            map_location: Where to load the tensors (default the CPU).
            trusted: Allow code from the file to run (to rebuild the model object).
        """
        payload = checkpoint.load(path, map_location=map_location or "cpu", trusted=trusted)
        if model is None:
            structure = payload.get("model_structure")
            if not trusted or structure is None:
                reason = "does not hold the model's structure" if structure is None else "would run code from the file to rebuild the model"
                raise checkpoint.CheckpointError(
                    f"Loading `{os.fspath(path)}` without `model=` {reason}. Pass `model=` (a model of the saved architecture)"
                    f"{'' if structure is None else ', or `trusted=True` for a file you trust'}. Received: model=None, trusted={trusted}"
                )
            model = checkpoint.unpack_model(structure, payload["model"], map_location=map_location)
        if optimizer is None and payload.get("optimizer") is not None:
            optimizer = _rebuild_optimizer(payload["optimizer_class"], payload["optimizer"], model)
        manager = cls(model, optimizer, loss_fn, metrics)
        manager.restore(payload, source=os.fspath(path))
        return manager


def _qualified_name(optimizer: torch.optim.Optimizer | None) -> str | None:
    return None if optimizer is None else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"


def _rebuild_optimizer(name: str | None, state: Mapping[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer | None:
    """A `torch.optim` optimizer of the saved class over `model`'s parameters (None for other classes)."""
    if not name or not name.startswith("torch.optim."):
        return None
    optimizer_class = getattr(torch.optim, name.rsplit(".", 1)[-1], None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        return None
    groups = state["param_groups"]
    if len(groups) != 1:
        return None  # several parameter groups: only the user knows which parameters go where
    accepted = inspect.signature(optimizer_class).parameters
    settings = {key: value for key, value in groups[0].items() if key in accepted and key != "params"}
    return optimizer_class(model.parameters(), **settings)
