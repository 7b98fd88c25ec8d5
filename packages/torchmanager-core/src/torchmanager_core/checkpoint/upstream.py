"""Reading checkpoint files written by upstream torchmanager 1.5 (trusted files only: they are pickles).

Upstream's `Checkpoint.save` pickles a dict (`CkptDict` plus `last_epoch` and `save_weights_only`)
whose "model" is one of three things: the whole manager (`LastCheckpoint(manager, ...)`, `Experiment`,
`BestCheckpoint`), a model object with the optimizer beside it, or, with `save_weights_only`, the
model's state dict. Upstream's classes do not exist here, so `Unpickler` turns every object of a
`torchmanager` or `torchmanager_core` class into an `UpstreamObject` that only keeps its attributes;
the model, the optimizer and a project's own manager subclass (torch's classes, or the project's,
imported as the pickle names them) come back as they were. `to_payload`
then builds what our managers restore: weights, optimizer state, epoch.

This module is also the `pickle_module` given to `torch.load` for trusted files; `checkpoint.load`
imports it then, not before.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import IO, Any, TypedDict, cast

import torch

from . import CheckpointError, pack_model

__all__ = ["CkptDict", "Unpickler", "UpstreamObject", "is_upstream_checkpoint", "load", "to_payload"]

_UPSTREAM_PACKAGES = ("torchmanager", "torchmanager_core")


class CkptDict(TypedDict):
    """The dict upstream 1.5 pickled into a checkpoint file (with `last_epoch` and `save_weights_only`)."""

    model: Any
    optimizer: torch.optim.Optimizer | None
    loss_fn: Any
    metrics: dict[str, Any]


class UpstreamObject:
    """An object of one of upstream's classes, read back as its attributes only (no upstream code runs)."""

    upstream_class: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.upstream_args = args  # enum members and the like are pickled as `cls(value)`

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            for part in state:
                if isinstance(part, Mapping):
                    self.__dict__.update(part)
        elif isinstance(state, Mapping):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<upstream {self.upstream_class}>"


_classes: dict[str, type[UpstreamObject]] = {}


def _stand_in(module: str, name: str) -> type[UpstreamObject]:
    qualified = f"{module}.{name}"
    if qualified not in _classes:
        stand_in = type(name, (UpstreamObject,), {"upstream_class": qualified, "__module__": __name__})
        _classes[qualified] = cast(type[UpstreamObject], stand_in)
    return _classes[qualified]


class Unpickler(pickle.Unpickler):
    """Unpickles as usual, except that upstream torchmanager's classes become `UpstreamObject`s.

    Raises:
        CheckpointError: The file pickles an object of a class that cannot be imported here (the
            project's model or manager class, moved, renamed or defined in another script's `__main__`).
    """

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in _UPSTREAM_PACKAGES:
            return _stand_in(module, name)
        try:
            return super().find_class(module, name)
        except (AttributeError, ImportError) as error:
            raise CheckpointError(_missing_class(module, name, error)) from error


def _missing_class(module: str, name: str, error: BaseException) -> str:
    """What to do when the pickled class `module.name` cannot be found."""
    if module == "__main__":
        where = (
            f"it was defined in the script that saved the file: define or import `{name}` in the script that loads "
            "it, under the same name, before loading"
        )
    elif isinstance(error, ImportError):
        where = f"its module `{module}` cannot be imported here: put the project's code on the path (`sys.path`)"
    else:
        where = f"its module `{module}` has no `{name}` any more: bring the class back under that name, or import it"
    return (
        f"The checkpoint pickles an object of class `{module}.{name}`, which cannot be found ({where}); or load "
        f"the weights only, with `model=` (a model of the saved architecture) instead of rebuilding the object. "
        f"Received: class={module}.{name}"
    )


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """`pickle.load` with `Unpickler` (what `torch.load` calls for files of its legacy format)."""
    return Unpickler(file, **kwargs).load()


def is_upstream_checkpoint(data: Mapping[str, Any]) -> bool:
    """Whether a loaded dict is upstream 1.5's checkpoint layout."""
    return {"model", "last_epoch", "save_weights_only"} <= data.keys()


def _pickled_manager(value: Any) -> dict[str, Any] | None:
    """The attributes of a pickled manager: upstream's own (an `UpstreamObject`) or a project's subclass of it.

    A subclass is unpickled as an object of the project's class (now derived from our managers) holding
    upstream's attributes, so they are read from its `__dict__`, not through our properties.
    """
    if isinstance(value, (torch.nn.Module, Mapping)):
        return None
    state = getattr(value, "__dict__", None)
    return state if isinstance(state, dict) and "model" in state else None


def to_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """Our checkpoint payload (model and optimizer state, epoch) from upstream's loaded dict.

    `epoch` is the number of epochs done: upstream's `last_epoch` is the index of the last one
    finished, and its `fit` resumed at the next. Loss and metric states are left out (upstream kept
    other values in them).

    Args:
        data: What `torch.load` with this module as `pickle_module` read from an upstream file.
    Returns:
        Our payload's `model`, `model_structure` (None if the model cannot be pickled again),
        `optimizer`, `optimizer_class`, `epoch` and `step`, and `converted_from`.
    Raises:
        TypeError: The file's "model" is none of a manager, a module or a state dict.
    """
    model, optimizer = data["model"], data.get("optimizer")
    manager = _pickled_manager(model)
    if manager is not None:  # the whole manager was pickled
        model, optimizer = manager["model"], manager.get("optimizer") or optimizer
    if isinstance(model, torch.nn.DataParallel):
        model = model.module
    if isinstance(model, torch.nn.Module):
        weights, structure = model.state_dict(), _packed(model)
    elif isinstance(model, Mapping) and all(isinstance(v, torch.Tensor) for v in model.values()):
        weights, structure = dict(model), None
    else:
        raise TypeError(
            "An upstream torchmanager checkpoint must hold a manager, a torch.nn.Module or a state dict as its "
            f"model. Received: model={type(model).__name__}"
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = None
    return {
        "model": weights,
        "model_structure": structure,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "optimizer_class": None
        if optimizer is None
        else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "epoch": int(data["last_epoch"]) + 1,
        "step": 0,
        "converted_from": "torchmanager 1.5",
    }


def _packed(model: torch.nn.Module) -> torch.Tensor | None:
    try:
        return pack_model(model)
    except TypeError:
        return None  # a model that cannot be pickled again: `from_checkpoint` then needs `model=`
