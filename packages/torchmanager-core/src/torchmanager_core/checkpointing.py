"""A manager's checkpoints: what goes into the file, and how a manager is restored from it.

Who owns what: `checkpoint` owns the bytes (atomic writes, safe loading, format version); this
module owns the payload, as functions the managers call with their parts: model and optimizer
state dicts, the running values of the pass in progress, the manager's options, and (from a
training manager) the run's position, random states, grad scaler and callbacks' states.

Payload (format 2): "model", "model_structure", "optimizer", "optimizer_class", "values" (the pass's
losses, metrics and extra values), "options", and from a training run "epoch", "step",
"global_step", "epoch_rng", "rng", "grad_scaler", "callbacks". Format 1 files load too (`read`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from . import checkpoint
from .epoch_values import EpochValues

__all__ = [
    "construct",
    "payload",
    "plain_compile_option",
    "read",
    "rebuild_model",
    "rebuild_optimizer",
    "restore",
]

T = TypeVar("T")
PathLike = str | os.PathLike[str]


def payload(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    values: EpochValues,
    options: Mapping[str, Any],
    structure: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
) -> dict[str, Any]:
    """The checkpoint content of a manager's parts, as state dicts and plain values.

    Args:
        model: The raw model.
        optimizer: The optimizer, or None.
        values: The running values of the pass whose state the checkpoint keeps.
        options: The manager's options (plain values).
        structure: Packs the model's structure (default `pack_structure`).
    """
    return {
        "model": model.state_dict(),
        "model_structure": (structure or pack_structure)(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": _qualified_name(optimizer),
        "values": values.state_dict(),
        "options": dict(options),
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


def restore(
    data: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    values: EpochValues,
    source: str,
) -> None:
    """Put a payload's model, optimizer and running values back, after checking all of it.

    Raises:
        CheckpointError: The payload does not fit the model, optimizer, losses or metrics; nothing was loaded.
    """
    check(data, model, optimizer, values, source)
    model.load_state_dict(data["model"])
    if optimizer is not None and data.get("optimizer") is not None:
        optimizer.load_state_dict(data["optimizer"])
    if data.get("values") is not None:
        values.load_state_dict(data["values"])


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
    set afterwards (`_apply_options`), so `from_checkpoint` keeps precision, accumulation and clipping.
    """
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    parts = {"model": model, "optimizer": optimizer, "loss_fn": loss_fn, "metrics": metrics}
    options = {key: value for key, value in (data.get("options") or {}).items() if key not in kwargs}
    given = {key: value for key, value in options.items() if takes_any or key in parameters}
    if all(name in parameters for name in parts):
        manager = cls(**parts, **given, **kwargs)
    else:
        manager = cls(model, optimizer, loss_fn, metrics, **given, **kwargs)  # type: ignore[call-arg]
    rest = {key: value for key, value in options.items() if key not in given}
    if rest:
        manager._apply_options(rest)  # type: ignore[attr-defined]
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
