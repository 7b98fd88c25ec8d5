"""Making a manager from a checkpoint (`Manager.from_checkpoint`): its model, its optimizer and its options.

Who owns what: `checkpointing` reads and restores a checkpoint's payload; this module builds what
`from_checkpoint` needs before restoring: the model object (only from a trusted file: unpickling
its structure runs code), a `torch.optim` optimizer of the saved class, and a manager of the given
class with the saved options.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

from . import checkpoint

__all__ = ["construct", "plain_compile_option", "rebuild_model", "rebuild_optimizer"]

T = TypeVar("T")
PathLike = str | os.PathLike[str]


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
