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
        _callbacks: CallbackList

        @property
        def raw_model(self) -> torch.nn.Module: ...

        def __init__(
            self, model: torch.nn.Module, optimizer: Any = None, loss_fn: Any = None, metrics: Any = None
        ) -> None: ...

    # -- what a training manager adds (the testing managers have no run state) -------------

    def _training_state(self) -> dict[str, Any]:
        """The run's position and step state for the payload: epoch, step, data-order RNG, grad scaler."""
        return {}

    def _restore_training_state(self, payload: Mapping[str, Any]) -> None:
        """Put `_training_state`'s entries back."""

    def _check_savable(self, path: PathLike) -> bool:
        """Whether the run may be saved now (a training manager refuses a non-finite loss)."""
        return True

    def _model_structure(self, model: torch.nn.Module) -> torch.Tensor | None:
        """The model's pickled structure, or None when it cannot be pickled (then `from_checkpoint` needs `model=`)."""
        try:
            return checkpoint.pack_model(model)
        except TypeError:
            return None

    # -- the payload -------------------------------------------------------------------------

    def checkpoint_payload(self) -> dict[str, Any]:
        """The checkpoint's content as state dicts and plain values (loadable without running code)."""
        model = self.raw_model
        payload: dict[str, Any] = {
            "model": model.state_dict(),
            "model_structure": self._model_structure(model),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "optimizer_class": _qualified_name(self.optimizer),
            "rng": get_rng_state(),
            "metrics": _module_states(self.compiled_metrics.fns),
            "streams": {"metrics": self.compiled_metrics.tracker.state_dict(), "extras": self._extras.state_dict()},
            "calls": {"metrics": self.compiled_metrics.calls},
            "callbacks": {},
            **self._training_state(),
        }
        if self.compiled_losses is not None:
            payload["loss_fn"] = _module_states(self.compiled_losses.fns)
            payload["streams"]["loss_fn"] = self.compiled_losses.tracker.state_dict()
            payload["calls"]["loss_fn"] = self.compiled_losses.calls
        self._callbacks.on_save_checkpoint(payload)
        return payload

    def save_checkpoint(self, path: PathLike) -> None:
        """Write a checkpoint of the run atomically (a crash leaves any previous file intact).

        Only the main process writes; the others wait at a barrier when distributed. A training
        run whose running loss is NaN or infinite is not saved (that would replace a good
        checkpoint by a broken one): see `BasicTrainingManager.fit`'s `on_nonfinite_loss`.
        """
        if not self._check_savable(path):
            return
        payload = self.checkpoint_payload()
        if distributed.is_main_process():
            checkpoint.save(payload, path)
        distributed.barrier()
        self._saved_checkpoint(os.fspath(path))

    def _saved_checkpoint(self, path: str) -> None:
        """A checkpoint was written to `path` (a training manager records it in `saved_checkpoints`)."""

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
        """Put a checkpoint payload back into this manager (what `load_checkpoint` does after reading).

        Everything is checked before anything is loaded: a refused checkpoint leaves the manager as it was.
        """
        self._check_payload(payload, source)
        self.raw_model.load_state_dict(payload["model"])
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
        self._restore_training_state(payload)

    def _check_payload(self, payload: Mapping[str, Any], source: str) -> None:
        """Raise `CheckpointError` if the payload does not fit this manager's model, optimizer, losses or metrics."""
        model = self.raw_model
        problems = _state_mismatch(model.state_dict(), payload["model"])
        if problems:
            raise checkpoint.CheckpointError(
                f"`{source}` holds the weights of a different model ({problems}); load it into the model architecture "
                f"that saved it. Received: model={type(model).__name__}"
            )
        saved_optimizer = payload.get("optimizer")
        if self.optimizer is not None and saved_optimizer is not None:
            saved_class, current_class = payload.get("optimizer_class"), _qualified_name(self.optimizer)
            if saved_class is not None and saved_class != current_class:
                raise checkpoint.CheckpointError(
                    f"`{source}` holds the state of a {saved_class} optimizer, and this manager's optimizer is a "
                    f"{current_class}; build the manager with the optimizer class that saved it. Received: optimizer={current_class}"
                )
            saved_sizes = [len(group["params"]) for group in saved_optimizer["param_groups"]]
            sizes = [len(group["params"]) for group in self.optimizer.param_groups]
            if saved_sizes != sizes:
                raise checkpoint.CheckpointError(
                    f"`{source}` holds an optimizer with parameter groups of {saved_sizes} tensors, and this manager's has "
                    f"{sizes}; build the optimizer over the same parameter groups. Received: param_groups={sizes}"
                )
        for what, fns, states in (
            ("metric", self.compiled_metrics.fns, payload.get("metrics", {})),
            ("loss", self.compiled_losses.fns if self.compiled_losses is not None else {}, payload.get("loss_fn", {})),
        ):
            for name, state in states.items():
                fn = fns.get(name)
                if isinstance(fn, torch.nn.Module) and set(fn.state_dict()) != set(state):
                    raise checkpoint.CheckpointError(
                        f"`{source}` holds a state for the {what} `{name}` that does not fit this manager's {type(fn).__name__} "
                        f"(keys {sorted(state)} vs {sorted(fn.state_dict())}); use the {what} that saved it under that name. "
                        f"Received: {what}s[{name!r}]={type(fn).__name__}"
                    )

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
                reason = (
                    "does not hold the model's structure"
                    if structure is None
                    else "would run code from the file to rebuild the model"
                )
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


def _state_mismatch(current: Mapping[str, Any], saved: Mapping[str, Any]) -> str:
    """What differs between two model state dicts (missing and unexpected keys, shapes), or ''."""
    problems = []
    missing, unexpected = sorted(current.keys() - saved.keys()), sorted(saved.keys() - current.keys())
    if missing:
        problems.append(f"missing key(s) {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected key(s) {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    for key in sorted(current.keys() & saved.keys()):
        mine, theirs = current[key], saved[key]
        if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor) and mine.shape != theirs.shape:
            problems.append(
                f"size mismatch for {key}: {tuple(theirs.shape)} in the checkpoint, {tuple(mine.shape)} in the model"
            )
    return "; ".join(problems)


def _qualified_name(optimizer: torch.optim.Optimizer | None) -> str | None:
    return None if optimizer is None else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"


def _rebuild_optimizer(
    name: str | None, state: Mapping[str, Any], model: torch.nn.Module
) -> torch.optim.Optimizer | None:
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
