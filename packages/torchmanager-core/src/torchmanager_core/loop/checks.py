"""Argument checks at the public entry points (`Manager(...)`, `fit`), before anything is placed or trained.

Every message says what is wrong, what would be right, then `Received: name=value`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import torch

from .epoch import DataSource, batches_in
from .options import FitOptions
from .plan import is_default
from .protocol import ManagerLike

__all__ = [
    "MANAGER_OPTIONS",
    "check_fit",
    "check_model_and_optimizer",
    "check_optimizer_params",
    "check_train_kwargs",
    "dev_run_batches",
    "explains_binding_errors",
    "missing_member",
    "positive_int",
    "positive_or_none",
]

MANAGER_OPTIONS = ("accumulate_grad_batches", "clip_grad_norm", "clip_grad_value", "precision", "compile", "strategy")
"""Options a manager takes when it is made, which Lightning and Keras users may give to `fit`."""


FAMILIAR_NAMES = {
    "train_dataloaders": "training_dataset",
    "x": "training_dataset",
    "dataloaders": "dataset",
    "val_dataloaders": "val_dataset",
    "validation_data": "val_dataset",
    "callbacks": "callbacks_list",
    "max_epochs": "epochs",
}
"""Lightning's and Keras's names for the data and options of `fit` and `test`, and ours."""

FAMILIAR_METHODS = {
    "evaluate": "`test(dataset)` evaluates (Keras's `evaluate`; it returns the loss and metrics by name)",
    "validate": "`test(val_dataset)` evaluates; `fit(..., val_dataset=...)` validates after each epoch",
    "compile": "a manager is made with what Keras's `compile` takes: `Manager(model, optimizer, loss_fn, metrics)` "
    "(`compile=True` there runs the model through `torch.compile`)",
    "fit_generator": "`fit` takes any iterable of batches (a `DataLoader`, a generator function's result)",
    "evaluate_generator": "`test` takes any iterable of batches",
    "predict_generator": "`predict` takes any iterable of batches",
    "train_on_batch": "`train_step(x, y)` trains on one batch (forward, backward and the optimizer's step)",
    "test_on_batch": "`test_step(x, y)` evaluates one batch",
    "predict_on_batch": "`manager.model(x)` predicts one batch (`predict` for a whole data set)",
    "save_weights": "`save_checkpoint(path)` saves the run; `torch.save(manager.raw_model.state_dict(), path)` the weights",
    "load_weights": "`load_checkpoint(path)` loads a run; `manager.raw_model.load_state_dict(...)` the weights",
}
"""Keras's and Lightning's methods a manager does not have, and what does their work here."""


def missing_member(owner: object, name: str) -> AttributeError:
    """Python's AttributeError for `owner.name`, which for a Keras or Lightning method says what does its work here."""
    message = f"{type(owner).__name__!r} object has no attribute {name!r}"
    if name in FAMILIAR_METHODS:
        message += f"; {FAMILIAR_METHODS[name]}"
    return AttributeError(message, name=name, obj=owner)


Params = ParamSpec("Params")
Result = TypeVar("Result")


def explains_binding_errors(method: Callable[Params, Result]) -> Callable[Params, Result]:
    """`method` whose arguments, where Python cannot bind them to its signature, raise the house's `TypeError`.

    Python's own ("got multiple values for argument 'epochs'") names neither the cause nor the way out:
    Keras's `fit(x, y, epochs=3)` and `test(x, y)` get the way to batches, Lightning's
    `fit(train_dataloaders=...)` ours names. `help()` shows `method`'s own signature.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            raise _binding_error(method.__name__, signature, args[1:], kwargs, error) from None
        return method(*args, **kwargs)

    return call


def _binding_error(
    name: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: TypeError
) -> TypeError:
    if len(args) >= 2 and _is_array(args[0]) and _is_array(args[1]) and not isinstance(args[1], int):
        return _keras_arrays_error(name, args[0], args[1])
    positional = [
        p.name if p.default is inspect.Parameter.empty else f"{p.name}=..."
        for p in list(signature.parameters.values())[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    familiar = [f"`{key}` is `{FAMILIAR_NAMES[key]}`" for key in kwargs if key in FAMILIAR_NAMES]
    hint = f" Here {'; '.join(familiar)}." if familiar else ""
    received = [f"{len(args)} positional argument{'s' if len(args) != 1 else ''}", *(f"{key}=..." for key in kwargs)]
    return TypeError(
        f"`{name}` cannot take these arguments ({error}): call it as {name}({', '.join(positional)}, "
        f"other options by name), the data first and by position.{hint} Received: {', '.join(received)}"
    )


def check_model_and_optimizer(model: object, optimizer: object) -> None:
    """Raise `TypeError` unless `model` is a module and `optimizer` an optimizer or None (a class gets a hint)."""
    if not isinstance(model, torch.nn.Module):
        if isinstance(model, type):
            raise TypeError(
                f"`model` must be a torch.nn.Module, not its class: build one, {model.__name__}(...). "
                f"Received: model={model!r}"
            )
        raise TypeError(f"`model` must be a torch.nn.Module. Received: model={type(model).__name__}")
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return
    if isinstance(optimizer, type) or not callable(optimizer):
        made = ""
        if isinstance(optimizer, type):
            made = f", built over the model's parameters: {optimizer.__name__}(model.parameters(), lr=...)"
        raise TypeError(
            f"`optimizer` must be a torch.optim.Optimizer{made}, a dict of them by name (several models, as a GAN's "
            "generator and discriminator), a function of the parameters returning one "
            f"(`lambda params: torch.optim.AdamW(params, lr=1e-3)`), or None. Received: optimizer={optimizer!r}"
        )


def positive_int(value: object, name: str) -> int:
    """`value` if it is a positive int (not a bool), else `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return value


def dev_run_batches(fast_dev_run: object) -> int:
    """`fast_dev_run` as a number of batches: True is 1, False 0, an int itself.

    Raises:
        ValueError: Neither a bool nor an int >= 0.
    """
    if isinstance(fast_dev_run, bool):
        return int(fast_dev_run)
    if not isinstance(fast_dev_run, int) or fast_dev_run < 0:
        raise ValueError(
            f"`fast_dev_run` must be True, False or a number of batches (an int >= 0). Received: fast_dev_run={fast_dev_run!r}"
        )
    return fast_dev_run


def positive_or_none(value: object, name: str) -> float | None:
    """`value` if it is a positive number or None, else `ValueError` naming `name`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise ValueError(f"`{name}` must be a positive number or None. Received: {name}={value!r}")
    return value


def check_fit(manager: ManagerLike, dataset: DataSource, val_dataset: DataSource | None, options: FitOptions) -> int:
    """Check `fit`'s arguments; return the total number of epochs.

    Raises:
        ValueError: A bad count, policy or data set, or no optimizer or loss for the default step.
        TypeError: Data given as arrays `x, y` apart (Keras's `fit(x, y)`) instead of batches.
    """
    epochs, iterations, initial_epoch = options.epochs, options.iterations, options.initial_epoch
    _check_keras_arrays(dataset, epochs)
    for name in ("limit_train_batches", "limit_val_batches"):
        if getattr(options, name) is not None:
            positive_int(getattr(options, name), name)
    waiting = getattr(manager, "_optimizer_factory", None) is not None  # built over the shards when placed
    if manager.optimizer is None and not waiting:
        raise ValueError(
            f"`fit` needs an optimizer: pass one to {type(manager).__name__}(model, optimizer, ...). Received: optimizer=None"
        )
    if manager.compiled_losses is None and is_default(manager, "train_step"):
        raise ValueError(
            "`fit` needs a `loss_fn` for the default training step: pass one to the manager "
            "(`Manager.from_checkpoint(path, ..., loss_fn=...)` for a restored one: a checkpoint keeps no loss "
            "function), or override `train_step`. Received: loss_fn=None"
        )
    _check_choice(options.on_nonfinite_loss, "on_nonfinite_loss", ("raise", "stop"))
    _check_choice(options.on_checkpoint_error, "on_checkpoint_error", ("raise", "continue"))
    if (epochs is None) == (iterations is None):
        raise ValueError(
            f"Give exactly one of `epochs` and `iterations`. Received: epochs={epochs!r}, iterations={iterations!r}"
        )
    count, name = (epochs, "epochs") if epochs is not None else (iterations, "iterations")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={count!r}")
    steps = batches_in(dataset)
    if steps == 0:
        raise ValueError(f"`training_dataset` {_why_no_batches(dataset)}. Received: training_dataset={dataset!r}")
    _check_readable_again(dataset, "training_dataset", epochs)
    if val_dataset is not None:
        _check_readable_again(val_dataset, "val_dataset", epochs)
        if batches_in(val_dataset) == 0:
            raise ValueError(
                f"`val_dataset` {_why_no_batches(val_dataset)} (or pass None). Received: val_dataset={val_dataset!r}"
            )
    if not waiting:
        check_optimizer_params(manager)
    if iterations is not None and steps is None:
        raise ValueError(
            "`iterations` needs a data set whose number of batches is known (`len`); give `epochs` instead."
        )
    total = count if epochs is not None else math.ceil(count / (steps or 1))
    if initial_epoch is not None and (
        isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch < total
    ):
        raise ValueError(f"`initial_epoch` must be an int in [0, {total}). Received: initial_epoch={initial_epoch!r}")
    return total


def _check_keras_arrays(dataset: object, epochs: object) -> None:
    """Keras's `fit(x, y)`: the labels land in `epochs`; say how to give the data as batches instead."""
    if _is_array(epochs) and not isinstance(epochs, int):
        raise _keras_arrays_error("fit", dataset, epochs)


def _keras_arrays_error(name: str, x: object, y: object) -> TypeError:
    data, second = ("training data", "epochs") if name == "fit" else ("data", "labels")
    return TypeError(
        f"`{name}` takes the {data} as batches of `(x, y)`, not the inputs and labels apart (Keras's "
        f"`{name}(x, y)`): make batches with `Dataset.from_tensor_slices((x, y), batch_size=32, shuffle=True)` "
        "(torchmanager.data), or a `DataLoader(TensorDataset(x, y), batch_size=32)`"
        + (", and pass `epochs=` by name" if name == "fit" else "")
        + f". Received: {'training_dataset' if name == 'fit' else 'dataset'} of {_shape(x)}, {second} of {_shape(y)}"
    )


def _is_array(value: object) -> bool:
    return (
        isinstance(value, torch.Tensor)
        or type(value).__module__ == "numpy"
        or (isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, (int, float)) for v in value))
    )


def _shape(value: object) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"type {type(value).__name__}"


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")


def _check_readable_again(source: DataSource, name: str, epochs: int | None) -> None:
    if isinstance(source, Iterator) and epochs is not None and epochs > 1:
        raise ValueError(
            f"`{name}` is an iterator (a generator, `iter(...)`), which can be read only once, and `fit` "
            f"reads it in each of the {epochs} epochs: give a list, a "
            f"torchmanager Dataset, a DataLoader or another iterable that starts again on each `iter()`. "
            f"Received: {name}={source!r}"
        )


def _why_no_batches(dataset: DataSource) -> str:
    """Why a data set gives no batches, naming `drop_last` and `batch_size` when they are the cause."""
    batch_size, drop_last = getattr(dataset, "batch_size", None), getattr(dataset, "drop_last", False)
    if drop_last and isinstance(batch_size, int):
        return f"yields 0 batches: with `drop_last=True` it needs at least `batch_size`={batch_size} items; lower `batch_size` or set `drop_last=False`"
    return "is empty (0 batches); give a non-empty data set"


def check_train_kwargs(manager: ManagerLike, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords `fit` passes to `_train` that no `_train` takes (a typo, a manager option).

    A subclass overriding `_train` may take more, as upstream allowed; the default takes `verbose_type`.
    """
    unknown = sorted(set(kwargs) - {"verbose_type"})
    if not unknown or not is_default(manager, "_train"):
        return
    options = [name for name in unknown if name in MANAGER_OPTIONS]
    taken = [  # `fit`'s own keywords, read from its signature (a misspelt one gets the closest as a hint)
        p.name
        for p in inspect.signature(type(manager).fit).parameters.values()  # type: ignore[attr-defined]  # the manager class, not the protocol
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    close = [match for name in unknown for match in difflib.get_close_matches(name, taken, n=1)]
    if options:
        hint = (
            f" {', '.join(f'`{name}`' for name in options)} is an option of the manager: "
            f"{type(manager).__name__}(model, optimizer, ..., {options[0]}=...)."
        )
    elif close:
        hint = f" Did you mean {', '.join(f'`{name}`' for name in close)}?"
    else:
        hint = " Check the spelling against `fit`'s arguments."
    raise TypeError(
        f"`fit` got keyword arguments it does not take: {', '.join(unknown)}.{hint} "
        f"Received: {', '.join(f'{name}={kwargs[name]!r}' for name in unknown)}"
    )


def check_optimizer_params(manager: ManagerLike) -> None:
    """An optimizer over none of the model's (or losses') parameters would train nothing."""
    assert manager.optimizer is not None
    owned = {id(p) for p in manager.raw_model.parameters()}
    for module in manager._stream_modules():
        owned.update(id(p) for p in module.parameters())
    optimized: Iterable[torch.Tensor] = [p for group in manager.optimizer.param_groups for p in group["params"]]
    optimized = list(optimized)
    if optimized and not any(id(p) in owned for p in optimized):
        raise ValueError(
            "The `optimizer` holds none of the model's parameters, so training would change nothing; build it from "
            f"this model: `torch.optim.SGD(model.parameters(), ...)`. Received: optimizer over {len(optimized)} other tensors"
        )
