"""`fit`: the training loop, top to bottom.

Who owns what: this module runs a fit from its checks to `on_train_end`: resume, placement, then
for each epoch: train it (`Manager._train`, the one pass of `epoch`), validate, end it. What a batch
does is `epoch`'s; the once-per-fit decisions are `plan`'s; hooks, saves, stops and preemption go
through `dispatch`; where the run is lives in `run`, and what a checkpoint holds in `checkpointing`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .. import checkpointing, distributed, evaluation_shards, preemption, strategy, training_shards
from ..callbacks import Callback
from ..epoch_values import running
from ..errors import StopTraining
from ..optimizers import Optimizers
from ..progress import RunEta, log_summary, logger
from ..run_log import batch_size_of, log_batches, log_run_start
from ..tracking import merge_summaries
from . import checks
from .dispatch import Dispatch
from .epoch import DataSource, batches_in, limited
from .evaluate import test, with_manager
from .options import FitOptions
from .plan import plan_fit
from .protocol import ManagerLike

__all__ = ["fit", "learning_rates"]


def fit(
    manager: ManagerLike,
    data: DataSource,
    val_data: DataSource | None,
    callbacks_list: Sequence[Callback] | None,
    options: FitOptions,
) -> dict[str, float]:
    """Train `manager`'s model (see `Manager.fit` for the arguments); the last epoch's merged summary, or {}."""
    checks.check_train_kwargs(manager, options.train_kwargs)  # first: a misspelt `epochs` is named as such
    total = checks.check_fit(manager, data, val_data, options)
    run, callbacks = manager._run, with_manager(callbacks_list, manager)
    resume(manager, options.resume_from or callbacks.resume_checkpoint(), options.initial_epoch)
    dev_run = options.fast_dev_run > 0
    run.start(
        run.epoch + 1 if dev_run else total, options.iterations, options.on_nonfinite_loss, options.on_checkpoint_error
    )
    structure = _packed_once()
    payload = lambda: checkpointing.snapshot(manager, callbacks, structure)  # noqa: E731
    dispatch = Dispatch(callbacks, run, payload, _savable(manager, dev_run))
    resumed = run.take_resumed_callbacks()
    if resumed is not None:
        dispatch("on_load_checkpoint", resumed)  # every callback of the list, whichever checkpoint resumed the run
    if run.finished:
        logger.warning(_nothing_to_train(run.epoch, run.total_epochs, options.iterations))
    placing = strategy.placed(manager, manager._strategy_option, manager._precision, manager._compile, *options.places)
    with placing, _fitting(manager, dispatch):
        checkpointing.load_pending_shards(manager)  # a sharded checkpoint's shards, into the placed model
        data, val_data = _prepare(manager, dispatch, data, val_data, options)
        checkpointing.check_layout(manager, data, options.allow_divergence)  # resumed on another number of processes?
        try:
            dispatch("on_train_start", run.epoch)
            _log_start(
                manager, data, options.iterations
            )  # after on_train_start: an Experiment opens its log file there
            _epochs(manager, dispatch, data, val_data, options)
        except StopTraining as stop:  # raised by a step or a `_train` of the user's (hooks set the stop flag)
            logger.info(str(stop.args[0]) if stop.args else "Training stopped.")
        dispatch.flush()  # saves a stop inside an accumulation window left waiting for the window's end
    return run.history[-1] if run.history else {}


def _epochs(
    manager: ManagerLike,
    dispatch: Dispatch,
    data: DataSource,
    val_data: DataSource | None,
    options: FitOptions,
) -> None:
    """Train, validate and end each epoch until the run is finished or stopped."""
    run = manager._run
    while not run.finished and not run.stop:
        if not _epoch(manager, dispatch, data, val_data, options):
            return


def resume(manager: ManagerLike, path: str | None, initial_epoch: int | None) -> None:
    """Continue from the checkpoint at `path`, or start at `initial_epoch`; else go on from where the run is."""
    if path is not None:
        checkpointing.resume(manager, str(path))
    elif initial_epoch is not None:
        manager._run.start_at(initial_epoch)


@contextlib.contextmanager
def _fitting(manager: ManagerLike, dispatch: Dispatch) -> Iterator[None]:
    """The run in progress: its plan and dispatch, preemption signals noted, optimizer updates counted; `on_train_end` last."""
    run, optimizer = manager._run, manager.optimizer
    assert optimizer is not None  # checked
    with preemption.deferred_signals(run) as deferred:
        counting = _count_updates(optimizer, run)
        manager._plan = plan_fit(manager, dispatch.callbacks, deferred, updates_hooked=counting is not None)
        manager._dispatch, dispatch.accumulate = dispatch, manager._plan.accumulate
        try:
            yield
        finally:
            if counting is not None:
                counting.remove()
            dispatch.settle()  # no reduction is left running when the run ends
            dispatch.close_progress()
            if manager._strategy is not None:
                manager._strategy.broadcast_buffers(
                    manager.model
                )  # every process returns rank 0's BatchNorm statistics
            run.active, manager._plan = False, None
            try:
                dispatch.close_writes()  # the last background write is done before `on_train_end` reads files
                dispatch("on_train_end", manager.raw_model)
            finally:
                manager._dispatch = None


def _count_updates(optimizer: torch.optim.Optimizer, run: Any) -> Any:
    """Count each optimizer update really applied (a step the grad scaler skips calls no step), once a batch (or
    accumulation window) however many optimizers of an `Optimizers` stepped in it: hooks on the optimizer or its
    members, or on the optimizer a wrapper holds as `.optimizer` (an EMA wrapper that never ran
    `Optimizer.__init__`); None when none has hooks."""
    counted: list[tuple[int, int]] = []

    def count(*_: Any) -> None:
        at = (run.epoch, run.current_batch)
        if not counted or counted[-1] != at:  # one round of updates a batch
            counted[:] = [at]
            run.global_step += 1

    members = list(optimizer.members.values()) if isinstance(optimizer, Optimizers) else [optimizer]
    hooked = [_hookable(member) for member in members]
    if any(candidate is None for candidate in hooked):
        return None  # no hook somewhere: the plan has `optimize` count each step it calls
    return _Handles([candidate.register_step_post_hook(count) for candidate in hooked])


def _hookable(optimizer: Any) -> Any:
    for candidate in (optimizer, getattr(optimizer, "optimizer", None)):
        if isinstance(getattr(candidate, "_optimizer_step_post_hooks", None), dict):
            return candidate
    return None


class _Handles:
    """Hook handles removed together."""

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _prepare(
    manager: ManagerLike, dispatch: Dispatch, data: DataSource, val_data: DataSource | None, options: FitOptions
) -> tuple[DataSource, DataSource | None]:
    """The data as this process reads it (its share under torchrun, limited as asked), the generators as the run
    left them."""
    run, iterations = manager._run, options.iterations
    data = limited(training_shards.shard(data), options.limit_train_batches or options.fast_dev_run or None)
    run.attach(data)
    if val_data is not None:
        val_data = limited(evaluation_shards.split(val_data), options.limit_val_batches or options.fast_dev_run or None)
    if options.fast_dev_run:
        logger.info(
            f"fast_dev_run: trying {options.fast_dev_run} batch(es) of training and validation in one epoch; "
            "no checkpoint is written."
        )
    per_epoch = batches_in(data)
    if iterations is not None:  # counted in this process's batches (its share under torchrun)
        run.total_epochs = math.ceil(iterations / (per_epoch or 1))
    _warn_if_all_eval(manager.raw_model)
    total = per_epoch * run.total_epochs if per_epoch is not None and iterations is None else iterations
    dispatch.eta = RunEta(total, (run.epoch * per_epoch if per_epoch is not None else 0) + run.batch)
    return data, val_data


def _log_start(manager: ManagerLike, data: DataSource, iterations: int | None) -> None:
    """The run's first lines: where it starts, its environment, options and model; its batches per process and in all."""
    run = manager._run
    options = {key: value for key, value in checkpointing.options(manager).items() if key != "precision"}
    total = run.total_epochs if iterations is None else None
    log_run_start(
        manager.raw_model,
        manager._run_device,
        manager._precision_option,
        options=options,
        epoch=run.epoch,
        total_epochs=total,
        step=run.batch,
    )
    processes, accumulate = distributed.get_world_size(), manager.accumulate_grad_batches
    log_batches(batch_size_of(data), batches_in(data), processes=processes, accumulate=accumulate, total_epochs=total)


def _epoch(
    manager: ManagerLike,
    dispatch: Dispatch,
    data: DataSource,
    val_data: DataSource | None,
    options: FitOptions,
) -> bool:
    """The epoch in progress: trained through `Manager._train`, validated and ended; False when it did not end (a stop
    or the budget between two batches, or a stop before its first batch). Its training values stay live until it
    ended (a checkpoint asked for at its end holds them, and is refused for a non-finite loss)."""
    run = manager._run
    manager._sync_streams()
    manager._last_values = manager._training
    with running(manager._passes, manager._training):
        if run.epoch_values is not None:  # the epoch goes on from a stop or a checkpoint: its values too
            manager._training.load_state_dict(run.epoch_values)
            run.epoch_values = None
        dispatch("on_epoch_start", run.epoch)
        if run.stop:
            return False  # stopped before the epoch's first batch: it has not started
        summary = manager._train(
            data,
            iterations=run.budget_left,
            device=manager._run_device,
            use_multi_gpus=options.places[2],
            callbacks_list=dispatch.callbacks,
            show_verbose=options.show_verbose,
            **options.train_kwargs,
        )
        if run.batch > 0 and not run.epoch_complete:  # a stop or the budget between two batches
            run.pause(manager._training.state_dict())
            shown = dispatch.close_progress(summary)
            log_summary(f"Stopped after batch {run.batch} of epoch {run.epoch + 1}", summary, console=not shown)
            return False
        _end_epoch(manager, dispatch, summary, _validate(manager, dispatch, val_data))
    return True


def _validate(manager: ManagerLike, dispatch: Dispatch, val_data: DataSource | None) -> dict[str, float] | None:
    """Validate on `val_data` (None: no validation) with its own values; the training epoch's stay as they are."""
    if val_data is None:
        return None
    epoch = manager._run.epoch
    dispatch("on_validation_start", epoch)
    summary = test(manager, val_data, None, False, "Validation")  # the epoch's bar shows its values
    dispatch("on_validation_end", epoch, summary)
    return summary


def _end_epoch(
    manager: ManagerLike, dispatch: Dispatch, summary: dict[str, float], val_summary: dict[str, float] | None
) -> None:
    """Report the epoch, call `on_epoch_end` (its saves are written after it), and agree on stopping."""
    run = manager._run
    epoch = run.epoch
    assert manager.optimizer is not None
    summary.update((name, rate) for name, rate in learning_rates(manager.optimizer).items() if name not in summary)
    run.end_epoch()  # the epoch is done: a checkpoint written now resumes at the next one
    dispatch.check_loss(epoch, summary)
    merged = merge_summaries(summary, val_summary)
    run.history.append(merged)
    shown = dispatch.close_progress(merged)  # the epoch's one line, validation values appended
    log_summary(f"Epoch {epoch + 1}/{run.total_epochs}", merged, console=not shown)
    dispatch("on_epoch_end", epoch, summary=summary, val_summary=val_summary)
    dispatch.agree(at_update=True)  # one process stopping stops them all, at this epoch's end


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate of each parameter group: `lr`, or `lr_0`, `lr_1`, ... for several groups; `lr_<name>` for
    each optimizer of an `Optimizers`."""
    if isinstance(optimizer, Optimizers):
        return optimizer.learning_rates()
    rates = [float(group["lr"]) for group in optimizer.param_groups if "lr" in group]
    if len(rates) == 1:
        return {"lr": rates[0]}
    return {f"lr_{i}": rate for i, rate in enumerate(rates)}


def _packed_once() -> Any:
    """Packs the model's structure for checkpoints once per fit (pickling it costs more than saving the weights)."""
    packed: dict[int, Any] = {}

    def structure(model: torch.nn.Module) -> torch.Tensor | None:
        if id(model) not in packed:
            packed.clear()
            packed[id(model)] = checkpointing.pack_structure(model)
        return packed[id(model)]  # type: ignore[no-any-return]

    return structure


def _savable(manager: ManagerLike, dev_run: bool) -> Any:
    """Whether a checkpoint may be written now: a non-finite training loss is never saved over a good checkpoint,
    and a `fast_dev_run` saves nothing."""

    def savable(path: str) -> bool:
        if dev_run:
            return False
        run = manager._run
        if not manager._passes or manager._passes[0] is not manager._training:
            return True
        loss = manager._training.tensors().get("loss")  # reading it syncs, once per save
        value = float(loss) if loss is not None else 0.0
        if not distributed.any_process(not math.isfinite(value)):  # every process decides alike
            return True
        epoch = run.epoch if run.batch else max(run.epoch - 1, 0)  # at an epoch's end it moved on
        where = f"at step {run.batch}" if run.batch else "at its end"
        assert manager._dispatch is not None
        manager._dispatch.nonfinite(epoch, value, f" {where}: not saving `{path}`, the previous checkpoint is kept")
        return False

    return savable


def _nothing_to_train(epoch: int, total_epochs: int, iterations: int | None) -> str:
    if iterations is not None:
        return f"Nothing to train: the run has trained its `iterations={iterations}` batches already; pass more to train on."
    return (
        f"Nothing to train: the run has done {epoch} epochs already and `epochs={total_epochs}` counts the epochs done "
        f"too; pass epochs={epoch + 1} or more to train on."
    )


def _warn_if_all_eval(model: torch.nn.Module) -> None:
    """`fit` keeps each module's train/eval mode; a model wholly in eval mode is worth a word."""
    if any(True for _ in model.modules()) and not any(module.training for module in model.modules()):
        logger.warning(
            f"Every module of the model ({type(model).__name__}) is in eval mode, so `fit` trains it that way "
            "(dropout off, BatchNorm statistics frozen); call `model.train()` before `fit` to train it as usual. "
            "`fit` keeps the mode of each module as you set it."
        )
