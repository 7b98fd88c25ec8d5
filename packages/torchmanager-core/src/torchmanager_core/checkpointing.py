"""A manager's checkpoints: what goes into the file, and how a manager and its run are restored from it.

Who owns what: `checkpoint` owns the bytes (atomic writes, safe loading, format version); this
module owns the payload: model and optimizer state dicts, the training pass's running values, the
manager's options, the run's position and random states (`loop.run.Run.state_dict`), the
precision's state (the grad scaler) and the callbacks' states; and restoring all of it (`restore`),
checked before anything is loaded. With `loop/run.py` it is the only place a resume happens.

Payload (format 2): "model", "model_structure", "optimizer", "optimizer_class", "values" (the pass's
losses, metrics and extra values), "options", "epoch", "step", "global_step", "trained_batches",
"epoch_rng", "rng", "history", "grad_scaler", "callbacks". Format 1 files load too (`read`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from . import checkpoint, distributed
from .callbacks import CallbackList
from .epoch_values import EpochValues
from .loop.protocol import ManagerLike

__all__ = [
    "CheckpointMembers",
    "construct",
    "options",
    "payload",
    "save",
    "plain_compile_option",
    "read",
    "rebuild_model",
    "rebuild_optimizer",
    "restore",
]

T = TypeVar("T")
M = TypeVar("M", bound="CheckpointMembers")
PathLike = str | os.PathLike[str]


class CheckpointMembers:
    """A manager's checkpoint methods (the manager inherits them; the payload is this module's)."""

    def save_checkpoint(self: ManagerLike, path: PathLike) -> None:
        """Write a checkpoint of the manager and its run atomically (a crash leaves any previous file intact).

        Only the main process writes; every process learns whether it could. Called from a hook
        during `fit`, it is a request: the loop writes the file once every callback has had the hook,
        so the checkpoint holds every callback's state of one moment.

        Raises:
            CheckpointError: The file could not be written (outside `fit`, or with `on_checkpoint_error="raise"`).
        """
        save(self, os.fspath(path))

    def load_checkpoint(
        self: ManagerLike, path: PathLike, *, map_location: Any = None, trusted: bool = False
    ) -> dict[str, Any]:
        """Restore the model, optimizer, losses, metrics and the run's position from `path`; returns its payload.

        Everything is checked before anything is loaded: a refused checkpoint leaves the manager as it was.

        Raises:
            FileNotFoundError: No file at `path`.
            CheckpointError: The file is not a checkpoint of ours, is corrupt, or holds another model.
        """
        payload = read(path, map_location=map_location, trusted=trusted)
        restore(self, payload, os.fspath(path))
        return payload

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
        **kwargs: Any,
    ) -> M:
        """A manager restored from a checkpoint with the options it was saved with; no code from the file runs unless `trusted`.

        Args:
            model: The model to load the weights into; without it the model object is rebuilt from the
                file, which runs code from it (only with `trusted=True`).
            optimizer: The optimizer to restore; default a `torch.optim` one of the saved class over the model.
            loss_fn, metrics: The manager's losses and metrics (their saved states are restored).
            map_location: Where to load the tensors (default the CPU).
            **kwargs: More constructor arguments (a subclass's own); they override the saved options.
        Raises:
            CheckpointError: No `model=` without trust or without a saved structure, or the file does
                not fit the given model, optimizer, losses or metrics.
        """
        payload = read(path, map_location=map_location, trusted=trusted)
        model = model if model is not None else rebuild_model(payload, path, trusted, map_location)
        if optimizer is None:
            optimizer = rebuild_optimizer(payload, model)
        manager = construct(cls, payload, model, optimizer, loss_fn, metrics, kwargs)
        restore(manager, payload, os.fspath(path))  # type: ignore[arg-type]  # `cls` is a Manager class
        return manager


def payload(
    manager: ManagerLike,
    callbacks: CallbackList | None = None,
    structure: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
) -> dict[str, Any]:
    """The checkpoint content of `manager` and its run, as state dicts and plain values.

    Args:
        manager: The manager.
        callbacks: The run's callbacks, each adding its state (`on_save_checkpoint`).
        structure: Packs the model's structure (default `pack_structure`; `fit` packs it once).
    """
    model, optimizer = manager.raw_model, manager.optimizer
    data: dict[str, Any] = {
        "model": model.state_dict(),
        "model_structure": (structure or pack_structure)(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": _qualified_name(optimizer),
        "values": _training_values(manager),
        "options": options(manager),
        **manager._run.state_dict(),
        "grad_scaler": manager._precision.state_dict(),
        "callbacks": {},
    }
    if callbacks is not None:
        callbacks.on_save_checkpoint(data)
    return data


def _training_values(manager: ManagerLike) -> dict[str, Any] | None:
    """The training pass's running values: live during its epoch, kept by the run between two `fit`s (a mid-epoch
    stop), else the losses' and metrics' state now (a resume at an epoch's start resets them; it is checked)."""
    if manager._run.epoch_values is not None and not (manager._passes and manager._passes[0] is manager._training):
        return manager._run.epoch_values
    return manager._training.state_dict()


def save(manager: ManagerLike, path: str) -> None:
    """`manager.save_checkpoint(path)`: inside a hook of a `fit` a request (written after it), during a `fit` a
    write under its policies, else a write of the manager's state now (the main process writes, every process
    learns whether it could).

    Raises:
        CheckpointError: The write failed (on every process alike: none is left waiting for the others).
    """
    dispatch = manager._dispatch
    if dispatch is not None:
        if not dispatch.request(path):
            dispatch.write(path)
        return
    data = payload(manager)
    error = distributed.on_main_process(lambda: checkpoint.save(data, path))
    if error is not None:
        raise error


def options(manager: ManagerLike) -> dict[str, Any]:
    """The constructor options a checkpoint keeps, so `from_checkpoint` makes the same manager."""
    return {
        "precision": manager._precision_option,
        "compile": plain_compile_option(manager._compile),
        "accumulate_grad_batches": manager.accumulate_grad_batches,
        "clip_grad_norm": manager.clip_grad_norm,
        "clip_grad_value": manager.clip_grad_value,
    }


def pack_structure(model: torch.nn.Module) -> torch.Tensor | None:
    """The model's pickled structure, or None when it cannot be pickled (then `from_checkpoint` needs `model=`)."""
    try:
        return checkpoint.pack_model(model)
    except TypeError:
        return None


def read(path: PathLike, *, map_location: Any = None, trusted: bool = False) -> dict[str, Any]:
    """`checkpoint.load`, with a format 1 payload brought to the current layout."""
    data = checkpoint.load(path, map_location=map_location or "cpu", trusted=trusted)
    return _upgrade(data) if data.get("format_version", 1) < 2 else data


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept module states, tracked means and call counts of losses and metrics apart."""
    streams, calls = data.get("streams", {}), data.get("calls", {})
    values: dict[str, Any] = {
        "metrics": {
            "fns": data.get("metrics", {}),
            "tracker": streams.get("metrics", {"totals": {}, "counts": {}}),
            "calls": int(calls.get("metrics", 0)),
        },
        "losses": None,
        "extras": streams.get("extras", {"totals": {}, "counts": {}}),
    }
    if "loss_fn" in data:
        values["losses"] = {
            "fns": data["loss_fn"],
            "tracker": streams.get("loss_fn", {"totals": {}, "counts": {}}),
            "calls": int(calls.get("loss_fn", 0)),
        }
    upgraded = {key: value for key, value in data.items() if key not in ("metrics", "loss_fn", "streams", "calls")}
    upgraded["values"] = values
    return upgraded


def restore(manager: ManagerLike, data: Mapping[str, Any], source: str) -> None:
    """Put a payload back into `manager` and its run, after checking all of it.

    Raises:
        CheckpointError: The payload does not fit the model, optimizer, losses or metrics; nothing was loaded.
    """
    model, optimizer = manager.raw_model, manager.optimizer
    check(data, model, optimizer, manager._training, source)
    model.load_state_dict(data["model"])
    if optimizer is not None and data.get("optimizer") is not None:
        optimizer.load_state_dict(data["optimizer"])
    run = manager._run
    run.load_state_dict(data)
    values = data.get("values")
    if values is not None:
        manager._training.load_state_dict(values)  # readable from the losses and metrics at once
    run.epoch_values = dict(values) if values is not None and run.batch > 0 else None  # kept for the epoch's rest
    manager._precision.load_state_dict(data.get("grad_scaler"))


def check(
    data: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    values: EpochValues,
    source: str,
) -> None:
    """Raise `CheckpointError` if the payload does not fit the model, the optimizer, the losses or the metrics."""
    problems = _state_mismatch(model.state_dict(), data["model"])
    if problems:
        raise checkpoint.CheckpointError(
            f"`{source}` holds the weights of a different model ({problems}); load it into the model architecture "
            f"that saved it. Received: model={type(model).__name__}"
        )
    saved_optimizer = data.get("optimizer")
    if optimizer is not None and saved_optimizer is not None:
        saved_class, current_class = data.get("optimizer_class"), _qualified_name(optimizer)
        if saved_class is not None and saved_class != current_class:
            raise checkpoint.CheckpointError(
                f"`{source}` holds the state of a {saved_class} optimizer, and this manager's optimizer is a "
                f"{current_class}; build the manager with the optimizer class that saved it. Received: optimizer={current_class}"
            )
        saved_sizes = [len(group["params"]) for group in saved_optimizer["param_groups"]]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if saved_sizes != sizes:
            raise checkpoint.CheckpointError(
                f"`{source}` holds an optimizer with parameter groups of {saved_sizes} tensors, and this manager's has "
                f"{sizes}; build the optimizer over the same parameter groups. Received: param_groups={sizes}"
            )
    saved_values = data.get("values") or {}
    owner = values.owner
    try:
        if owner.compiled_losses is not None and saved_values.get("losses") is not None:
            owner.compiled_losses.check_state_dict(saved_values["losses"], "loss", source)
        owner.compiled_metrics.check_state_dict(saved_values.get("metrics", {}), "metric", source)
    except ValueError as error:
        raise checkpoint.CheckpointError(str(error)) from error


def rebuild_model(data: Mapping[str, Any], path: PathLike, trusted: bool, map_location: Any) -> torch.nn.Module:
    """The model object rebuilt from the payload's structure (runs code from the file: only when trusted).

    Raises:
        CheckpointError: Not trusted, or the file holds no structure.
    """
    structure = data.get("model_structure")
    if structure is None:
        raise checkpoint.CheckpointError(
            f"`{os.fspath(path)}` does not hold the model's structure (weights only), so the model cannot be rebuilt "
            "from it: pass `model=` (a model of the saved architecture), with `loss_fn=` and `metrics=` to test or "
            "train (the file keeps their running states, not the objects). Received: model=None"
        )
    if not trusted:
        raise checkpoint.CheckpointError(
            f"Loading `{os.fspath(path)}` without `model=` would run code from the file to rebuild the model: pass "
            "`model=` (a model of the saved architecture, then only weights are read), or `trusted=True` for a file "
            "you trust; give `loss_fn=` and `metrics=` too to test or train (the file keeps their running states, not "
            f"the objects). Received: model=None, trusted={trusted}"
        )
    return checkpoint.unpack_model(structure, data["model"], map_location=map_location)


def rebuild_optimizer(data: Mapping[str, Any], model: torch.nn.Module) -> torch.optim.Optimizer | None:
    """A `torch.optim` optimizer of the saved class over `model`'s parameters (None for other classes,
    several parameter groups, or no saved optimizer)."""
    name, state = data.get("optimizer_class"), data.get("optimizer")
    if not name or state is None or not name.startswith("torch.optim."):
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


def construct(
    cls: type[T],
    data: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    loss_fn: Any,
    metrics: Any,
    kwargs: Mapping[str, Any],
) -> T:
    """A manager of class `cls` for a checkpoint: its parts, the saved options, and a subclass's own arguments.

    The model, optimizer, losses and metrics go by keyword when the constructor names them so (a
    subclass may put its own arguments first); the saved options the constructor does not take are
    set afterwards, so `from_checkpoint` keeps precision, accumulation and clipping.
    """
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    parts = {"model": model, "optimizer": optimizer, "loss_fn": loss_fn, "metrics": metrics}
    saved = {key: value for key, value in (data.get("options") or {}).items() if key not in kwargs}
    given = {key: value for key, value in saved.items() if takes_any or key in parameters}
    if all(name in parameters for name in parts):
        manager = cls(**parts, **given, **kwargs)
    else:
        manager = cls(model, optimizer, loss_fn, metrics, **given, **kwargs)  # type: ignore[call-arg]
    for name, value in saved.items():  # the saved options the constructor did not take
        if name not in given:
            setattr(manager, "_compile" if name == "compile" else name, value)
    return manager


def plain_compile_option(option: bool | Mapping[str, Any]) -> bool | dict[str, Any]:
    """The `compile` option as a checkpoint can keep it (a dict of plain values; True when it held objects)."""
    if isinstance(option, bool):
        return option
    plain = (str, int, float, bool, type(None))
    if all(isinstance(key, str) and isinstance(value, plain) for key, value in option.items()):
        return dict(option)
    return True


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
