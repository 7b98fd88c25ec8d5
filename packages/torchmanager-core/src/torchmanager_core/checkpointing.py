"""A manager's checkpoints: what goes into the file, and how a manager and its run are restored from it.

Who owns what: `checkpoint` owns the bytes (atomic writes, safe loading, format version); this
module owns the payload: model and optimizer state dicts, the training pass's running values, the
manager's options, the run's position and random states (`loop.run.Run.state_dict`), the
precision's state (the grad scaler) and the callbacks' states; and restoring all of it (`restore`),
checked before anything is loaded. With `loop/run.py` it is the only place a resume happens.

Payload (format 2): "model", "model_structure", "optimizer", "optimizer_class", "values" (the pass's
losses, metrics and extra values), "options", "epoch", "step", "global_step", "trained_batches",
"epoch_rng", "rng", "history", "grad_scaler", "callbacks", and the layout of the run that wrote it:
"world_size", "samples_done" (the global position in the epoch's order), "samples_per_update". The
run's state is defined per process: "rng", "epoch_rng", "values" and "gradients" (an accumulation
window's gradients summed so far, when written inside one) are each process's own (`OWN_KEYS`):
at the top the main process's, and under torchrun every process's under "ranks", each restored
into its own process (`checkpoint.reshard` says which a process takes on another number of them).
A sharded model (FSDP2) is written as a folder (`checkpoint.sharded`), with the same values and the
model's and optimizer's shards; a sharded resume reads the values first and the shards once the run
is placed (`load_pending_shards`). Format 1 files load too (`read`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch

from . import checkpoint, distributed
from .callbacks import CallbackList
from .checkpoint import is_sharded_checkpoint, reshard
from .checkpoint.writes import RunWrites, Snapshot
from .data_position import samples_done
from .epoch_values import EpochValues
from .loop.protocol import ManagerLike
from .rebuild import construct, plain_compile_option, rebuild_model, rebuild_optimizer
from .run_log import batch_size_of
from .strategy import is_fully_sharded, load_plain_state_dict, plain_state_dict
from .strategy.plain_keys import load_plain_gradients, plain_gradients, state_mismatch

__all__ = [
    "OWN_KEYS",
    "CheckpointMembers",
    "construct",
    "options",
    "save",
    "plain_compile_option",
    "read",
    "rebuild_model",
    "rebuild_optimizer",
    "restore",
    "resume",
    "snapshot",
]

OWN_KEYS = ("rng", "epoch_rng", "values", "gradients")
"""The payload's values that are each process's own (see the module docstring)."""

T = TypeVar("T")
M = TypeVar("M", bound="CheckpointMembers")
PathLike = str | os.PathLike[str]


class CheckpointMembers:
    """A manager's checkpoint methods (the manager inherits them; the payload is this module's)."""

    def save_checkpoint(self: ManagerLike, path: PathLike, *, background: bool = False) -> None:
        """Write a checkpoint of the manager and its run atomically (a crash leaves any previous file intact).

        The main process writes a single file (every process's own values in it), or every process
        its shards of a sharded model (FSDP2: a folder); all learn whether it could. From a hook of
        `fit` it is a request, written once every callback had the hook (inside an accumulation
        window: at its end). `background=True` (during `fit`): the state is copied to host memory at
        once and a thread writes it; the next save and the end of `fit` wait for it.

        Raises:
            CheckpointError: The file could not be written (outside `fit`, or with `on_checkpoint_error="raise"`).
        """
        save(self, os.fspath(path), background)

    def load_checkpoint(
        self: ManagerLike, path: PathLike, *, map_location: Any = None, trusted: bool = False
    ) -> dict[str, Any]:
        """Restore the model, optimizer, losses, metrics and the run's position from `path`; returns its payload.

        Everything is checked before anything is loaded: a refused checkpoint leaves the manager as it was.

        Raises:
            FileNotFoundError: No file at `path`.
            CheckpointError: The file is not a checkpoint of ours, is corrupt, or holds another model.
        """
        if not is_sharded_checkpoint(path):
            payload = read(path, map_location=map_location, trusted=trusted)
            restore(self, payload, os.fspath(path))
            return payload
        resume(self, os.fspath(path))  # a sharded model's: its shards load now, or when `fit` shards it
        if is_fully_sharded(self.raw_model):
            load_pending_shards(self)
        from .checkpoint import sharded  # DCP: imported once a sharded checkpoint is met

        return dict(sharded.read_plain(path).run)

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


def snapshot(
    manager: ManagerLike,
    callbacks: CallbackList | None = None,
    structure: Callable[[torch.nn.Module], torch.Tensor | None] | None = None,
) -> Snapshot:
    """The checkpoint content of `manager` and its run now: what every process holds alike, this process's own
    values, and a sharded model's state dicts (`checkpoint.writes.Snapshot`).

    Args:
        manager: The manager.
        callbacks: The run's callbacks, each adding its state (`on_save_checkpoint`).
        structure: Packs the model's structure (default `pack_structure`; `fit` packs it once).
    """
    model, optimizer, strategy, run = manager.raw_model, manager.optimizer, manager._strategy, manager._run
    position = run.state_dict()
    shared: dict[str, Any] = {
        "optimizer_class": _qualified_name(optimizer),
        "options": options(manager),
        **{key: value for key, value in position.items() if key not in OWN_KEYS},
        "grad_scaler": manager._precision.state_dict(),
        **_layout(manager),
        "callbacks": {},
    }
    values = _training_values(manager)
    own = {
        "rng": position["rng"],
        "epoch_rng": position["epoch_rng"],
        "values": values,
        "gradients": _open_window_gradients(manager),
    }
    if distributed.is_distributed() and values is not None:  # for a resume on another number of processes
        shared["whole_values"] = manager._training.whole_state_dict(values)
    tensors = None
    if is_fully_sharded(model):
        strategy = strategy if strategy is not None and strategy.sharded else _sharding_strategy()
        tensors = {"model": strategy.model_state_dict(manager.model)}
        if optimizer is not None:
            tensors["optimizer"] = strategy.optimizer_state_dict(manager.model, optimizer)
    else:
        shared["model"] = plain_state_dict(model)
        shared["model_structure"] = (structure or pack_structure)(model)
        shared["optimizer"] = optimizer.state_dict() if optimizer is not None else None
    if callbacks is not None:
        callbacks.on_save_checkpoint(shared)
    return Snapshot(shared, own, tensors)


def _sharding_strategy() -> Any:
    """FSDP2's strategy, for a sharded model outside a run (its state dicts need no run)."""
    from .strategy.fsdp import FSDP2Strategy

    return FSDP2Strategy()


def _layout(manager: ManagerLike) -> dict[str, Any]:
    """How the run is laid out over processes: their number, the global position and the samples of an update."""
    run, world = manager._run, distributed.get_world_size()
    batch = batch_size_of(run.data)
    return {
        "world_size": world,
        "samples_done": samples_done(run.data, run.batch) if isinstance(run.data, Iterable) else None,
        "samples_per_update": world * batch * manager.accumulate_grad_batches if batch is not None else None,
    }


def _open_window_gradients(manager: ManagerLike) -> dict[str, torch.Tensor]:
    """The gradients summed so far in an accumulation window the run stopped inside (none at a window's end).

    `fit` defers its saves to a window's end; a save inside one (a stop between two batches of a
    window, a save after such a `fit`) keeps them, so the resumed window sums the same gradients.
    """
    if manager._run.window_done(manager.accumulate_grad_batches):
        return {}
    return plain_gradients(manager.raw_model)


def _training_values(manager: ManagerLike) -> dict[str, Any] | None:
    """The training pass's running values: live during its epoch, kept by the run between two `fit`s (a mid-epoch
    stop), else the losses' and metrics' state now (a resume at an epoch's start resets them; it is checked)."""
    if manager._run.epoch_values is not None and not (manager._passes and manager._passes[0] is manager._training):
        return manager._run.epoch_values
    return manager._training.state_dict()


def save(manager: ManagerLike, path: str, background: bool = False) -> None:
    """`manager.save_checkpoint(path)`: inside a hook of a `fit` a request (written after it), during a `fit` a
    write under its policies, else a write of the manager's state now (the main process writes a single file,
    every process its shards of a sharded model; every process learns whether it could).

    Raises:
        CheckpointError: The write failed (on every process alike: none is left waiting for the others).
    """
    dispatch = manager._dispatch
    if dispatch is not None:
        if not dispatch.request(path, background):
            dispatch.write(path, background)
        return
    writes = RunWrites()
    try:
        error = writes.write(snapshot(manager), path)
    finally:
        writes.close()
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


def resume(manager: ManagerLike, path: str) -> None:
    """Continue `manager`'s run from the checkpoint at `path`: a single file (`restore`), or a sharded checkpoint's
    folder, whose values are restored now and shards once the run is placed (`load_pending_shards`).

    Raises:
        FileNotFoundError: Nothing at `path`.
        CheckpointError: The checkpoint does not fit the manager (nothing was loaded), or is not one.
    """
    if not is_sharded_checkpoint(path):
        restore(manager, read(path), path)
        return
    from .checkpoint import sharded  # DCP: imported once a sharded checkpoint is met

    loaded = sharded.read_plain(path)
    restore(manager, {**loaded.run, **loaded.ranks[0], "ranks": loaded.ranks}, path)
    manager._run.pending_shards = loaded.folder


def load_pending_shards(manager: ManagerLike) -> None:
    """Load the model's and optimizer's shards of the sharded checkpoint being resumed (a collective), once the run
    is placed and its optimizer built.

    Raises:
        CheckpointError: The run does not shard its model, or the shards do not fit it.
    """
    run, strategy, optimizer = manager._run, manager._strategy, manager.optimizer
    folder, run.pending_shards = run.pending_shards, None
    if folder is None:
        return
    if strategy is None and is_fully_sharded(manager.raw_model):  # loaded outside a run, into a sharded model
        strategy = _sharding_strategy()
    if strategy is None or not strategy.sharded:
        raise checkpoint.CheckpointError(
            f"`{folder}` is a sharded checkpoint (a folder), which a run resumes with the strategy that shards the "
            f"model: pass `strategy='fsdp'` to the manager and launch with torchrun. Received: strategy={strategy!r}"
        )
    from .checkpoint import sharded  # DCP: imported once a sharded checkpoint is met

    tensors = {"model": strategy.model_state_dict(manager.model)}
    if optimizer is not None:  # laid out as saved: with a state, or hyperparameters alone
        stepped = sharded.holds(folder, "optimizer.state.")
        tensors["optimizer"] = strategy.optimizer_state_dict(manager.model, optimizer, stepped=stepped)
    sharded.load_tensors(folder, tensors)
    strategy.load_model_state_dict(manager.model, tensors["model"])
    if optimizer is not None:
        strategy.load_optimizer_state_dict(manager.model, optimizer, tensors["optimizer"])


def restore(manager: ManagerLike, data: Mapping[str, Any], source: str) -> None:
    """Put a payload back into `manager` and its run, after checking all of it; each process takes its own values.

    Raises:
        CheckpointError: The payload does not fit the model, optimizer, losses or metrics; nothing was loaded.
    """
    model, optimizer, run = manager.raw_model, manager.optimizer, manager._run
    ranks = list(data.get("ranks") or [])
    if ranks:
        own = reshard.own_values(ranks, distributed.get_rank(), distributed.get_world_size(), data.get("whole_values"))
        data = {**data, **own}
    check(data, model, optimizer, manager._training, source)
    if optimizer is None and manager._optimizer_factory is not None and data.get("optimizer") is not None:
        raise checkpoint.CheckpointError(
            f"`{source}` is a single-file checkpoint, and this manager's optimizer is built over FSDP2's shards, which "
            "its optimizer state cannot be loaded into; resume it with the strategy that wrote it, or resume an FSDP2 "
            f"run from its sharded checkpoint (a folder). Received: path={source!r}"
        )
    if "model" in data:  # a sharded checkpoint's tensors are loaded once the run is placed
        load_plain_state_dict(model, data["model"])
    if optimizer is not None and data.get("optimizer") is not None:
        optimizer.load_state_dict(data["optimizer"])
    load_plain_gradients(model, data.get("gradients") or {})
    run.load_state_dict(data)
    values = data.get("values")
    if values is not None:
        manager._training.load_state_dict(values)  # readable from the losses and metrics at once
    run.epoch_values = dict(values) if values is not None and run.batch > 0 else None  # kept for the epoch's rest
    manager._precision.load_state_dict(data.get("grad_scaler"))
    randoms = [own["rng"] for own in ranks or [data] if own.get("rng") is not None]
    run.saved_layout = {
        "world_size": int(data.get("world_size") or 1),
        "random_states": [rng.get("generators", rng) for rng in randoms],  # format 1 kept them alone
        "samples_done": data.get("samples_done"),
        "samples_per_update": data.get("samples_per_update"),
    }


def check_layout(manager: ManagerLike, data: Any, allow_divergence: bool = False) -> None:
    """Check that the run resumed from a checkpoint may go on over this run's processes; on another number of them,
    move its position to the global sample where the checkpoint's processes stopped (`reshard.continue_layout`).

    Called once the training data is known (its batch size gives the position in batches).

    Raises:
        ValueError: As `reshard.continue_layout`.
    """
    run = manager._run
    layout, run.saved_layout = run.saved_layout, None
    if layout is not None:
        accumulate, model = manager.accumulate_grad_batches, manager.raw_model
        batch = reshard.continue_layout(layout, run.batch, batch_size_of(data), accumulate, model, allow_divergence)
        run.batch = run.skip = batch


def check(
    data: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    values: EpochValues,
    source: str,
) -> None:
    """Raise `CheckpointError` if the payload does not fit the model, the optimizer, the losses or the metrics."""
    problems = state_mismatch(plain_state_dict(model), data["model"]) if "model" in data else ""
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


def _qualified_name(optimizer: torch.optim.Optimizer | None) -> str | None:
    return None if optimizer is None else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
