"""One resumable pass over data, for a training epoch, a validation and a test alike.

Who owns what: `batches` turns a data source into the `(x, y)` batches of one pass, on the device,
looking one batch ahead so the last batch is known when it comes (for any source, sized or not),
and skipping the batches a resumed epoch already trained, after drawing its data order again.
`run_pass` runs a step on each batch, records its values, calls the batch hooks through the run's
dispatch and, in training, moves the run's position on and agrees on stopping. `train_epoch` is
the body of `Manager._train`; `evaluate` the body of `test` and of validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch

from .. import distributed, evaluation_shards
from ..data_position import resume_iterator, samples_done, set_epoch
from ..devices import move_to_device
from ..epoch_values import EpochValues
from ..loader_workers import protect_workers
from ..progress import EpochProgress, VerboseType, logger
from ..strategy.lockstep import lockstep
from .dispatch import Dispatch
from .plan import Plan, Step, is_default
from .protocol import ManagerLike

__all__ = ["DataSource", "Limited", "batches", "batches_in", "evaluate", "limited", "stand_in", "train_epoch"]

DataSource: TypeAlias = Iterable[Any]
"""Anything iterable yielding `(x, y)` batches: a torchmanager `Dataset`, a `DataLoader`, a list."""

_END = object()


def batches_in(dataset: DataSource) -> int | None:
    """The number of batches a pass over `dataset` yields, when it is known without iterating."""
    batched_len = getattr(dataset, "batched_len", None)
    if isinstance(batched_len, int):
        return batched_len
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def batches(
    dataset: DataSource,
    unpack: Callable[[Any], tuple[Any, Any]],
    device: torch.device,
    convert: Callable[[Any], Any] | None = None,
    *,
    skip: int = 0,
    after_skip: Callable[[], None] | None = None,
    pairs: bool = False,
) -> Iterator[tuple[Any, Any, bool]]:
    """Yield `(x, y, is_last)` for each batch of `dataset` on `device` (non-blocking), `x` through `convert` if given.

    Args:
        skip: Batches to draw and drop first (those a resumed epoch already trained on).
        after_skip: Called once the skipped batches and the first batch to yield were drawn (a
            resume puts the generators back as they were when its checkpoint was written).
        pairs: `unpack` is the default one, which takes a pair's items as they are (done here, without a call).
    """
    iterator = iter(dataset)
    for _ in range(skip):
        if next(iterator, _END) is _END:
            break
    pending = next(iterator, _END)
    if after_skip is not None:
        after_skip()
    arrays: bool | None = None  # whether the batches hold NumPy arrays (looked at once, at the first batch)
    while pending is not _END:
        following = next(iterator, _END)
        x, y = pending if pairs and pending.__class__ is tuple and len(pending) == 2 else unpack(pending)
        if arrays is None:
            arrays = _numpy(x) or _numpy(y)
        if arrays:
            x, y = _tensor(x), _tensor(y)
        if x.__class__ is not torch.Tensor or x.device != device:  # a tensor already there: nothing to move
            x = move_to_device(x, device)
        if y.__class__ is not torch.Tensor or y.device != device:
            y = move_to_device(y, device)
        yield (x if convert is None else convert(x)), y, following is _END
        pending = following


def _numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" or (
        isinstance(value, (tuple, list)) and any(type(item).__module__ == "numpy" for item in value)
    )


def _tensor(value: Any) -> Any:
    """A NumPy array as a tensor, as Keras takes them: floating point in torch's default dtype (float32), not
    NumPy's float64, so that it fits the model's weights."""
    if isinstance(value, (tuple, list)):
        return type(value)(_tensor(item) for item in value)
    if type(value).__module__ != "numpy":
        return value
    tensor = torch.as_tensor(value)
    return tensor.to(torch.get_default_dtype()) if tensor.is_floating_point() else tensor


class Limited:
    """The first `n` batches of `data` at each pass (Lightning's `limit_train_batches`); its other attributes (sampler,
    generator, `set_epoch`, ...) are `data`'s, so its random state and epochs are the data's."""

    def __init__(self, data: DataSource, n: int) -> None:
        self.data, self.n = data, n

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.data), self.n)

    def __len__(self) -> int:
        total = batches_in(self.data)
        return self.n if total is None else min(total, self.n)

    @property
    def batched_len(self) -> int:
        return len(self)

    def __getattr__(self, name: str) -> Any:
        if name in ("data", "n") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.data, name)


def limited(data: DataSource, n: int | None) -> DataSource:
    """`data`, or its first `n` batches at each pass."""
    return data if n is None else Limited(data, n)


def unpacker(manager: ManagerLike, dataset: DataSource) -> Callable[[Any], tuple[Any, Any]]:
    """How the batches of `dataset` split into `(x, y)`: its own `unpack_data`, else the manager's."""
    unpack: Callable[[Any], tuple[Any, Any]] = getattr(dataset, "unpack_data", None) or manager.unpack_data
    return unpack


@dataclass(frozen=True)
class _Pass:
    """What differs between a training pass and an evaluation pass.

    `stand_in`: a forward on a batch whose output is discarded, for a pass every process runs in
    lockstep (a sharded model's evaluation: `strategy.lockstep`), else None.
    """

    training: bool
    step: Step
    values: EpochValues
    start_hook: str
    end_hook: str
    stand_in: Callable[[Any], object] | None = None


def run_pass(
    manager: ManagerLike, plan: Plan, dispatch: Dispatch, data: DataSource, spec: _Pass, progress: EpochProgress
) -> int:
    """Run `spec.step` on each batch of `data`; the number of batches run.

    In training, the run's position moves on after each batch (`batch`), the
    last batch is the data's or the budget's, and after each batch the processes agree on stopping
    when the plan says so (a preemption signal is acted on at an update boundary).
    """
    run, training, values, step = manager._run, spec.training, spec.values, spec.step
    protect_workers(data)  # its loader processes outlive a SIGTERM sent to the whole job: the run acts on it
    skip, after_skip = run.data_order(data) if training else (0, None)
    source = _resumed(data, skip) if skip else None
    if source is not None:
        skip = 0
    if spec.stand_in is not None:  # each round: every process a forward, on a batch of its own or a stand-in
        source = lockstep(data, spec.stand_in)
    start, end = dispatch.uses(spec.start_hook), dispatch.uses(spec.end_hook)
    index = run.batch if training else 0
    left = run.budget_left if training else None
    budget_end = -1 if left is None else index + left  # the batch index the budget ends before
    done, last = 0, False
    convert = manager._precision.convert_input if manager._precision.converts_input else None
    unpack, device = unpacker(manager, data), manager._run_device
    strategy = manager._strategy
    sync = strategy.gradient_sync if training and plan.accumulate > 1 and strategy is not None else None
    pairs = unpack == manager.unpack_data and is_default(manager, "unpack_data")  # decided once per pass
    for x, y, last in batches(source or data, unpack, device, convert, skip=skip, after_skip=after_skip, pairs=pairs):
        if training:
            run.current_batch, run.last_batch = index, last or index + 1 == budget_end
        if start:
            dispatch(spec.start_hook, index)
        if sync is None:
            summary = step(x, y)
        else:  # DDP decides in the forward whether a backward reduces: the whole step is inside the context
            with sync(manager.model, run.window_end(plan.accumulate)):
                summary = step(x, y)
        if summary or not isinstance(summary, dict):  # the counting step returns {}: its metrics counted already
            values.record(summary, x, y)
        index, done = index + 1, done + 1
        if training:
            run.batch = index
        if end:
            dispatch(spec.end_hook, index - 1, summary=summary)
        elif training and run.checkpoint_requests:  # asked for before the batch, inside its window
            dispatch.write_requested()
        if progress.enabled:
            progress.step(values.tensors)
        if not training:
            continue
        if plan.agree_each_step:  # torchrun: the processes stop at the same batch, agreed in the background
            if dispatch.agree_after_batch(at_update=run.window_done(plan.accumulate)) or run.last_batch:
                break
            continue
        if run.signal is not None:
            dispatch.agree(at_update=run.window_done(plan.accumulate))
        if run.stop or run.last_batch:
            break
    else:
        last = True  # the data ran out (a resume may have skipped all that was left)
    if training:
        run.epoch_complete = last
    return done


def train_epoch(
    manager: ManagerLike, dataset: DataSource, show_verbose: bool, verbose_type: VerboseType
) -> dict[str, float]:
    """Train the epoch in progress over `dataset` (the rest of it when resumed) and return its summary floats.

    Raises:
        RuntimeError: No `fit` is running.
        ValueError: The epoch yielded no batch at all.
    """
    dispatch, plan, run = manager._dispatch, manager._plan, manager._run
    if dispatch is None or plan is None:
        raise RuntimeError(
            "`_train` trains one epoch of a running `fit`; call `fit` instead. Received: _train() outside fit"
        )
    values = manager._training
    values.believe_steps = plan.believe_train_steps
    set_epoch(dataset, run.epoch)
    run.steps_in_epoch = batches_in(dataset)
    progress = dispatch.progress = EpochProgress(
        _bar_total(run.steps_in_epoch, run.batch, run.budget_left),
        f"Epoch {run.epoch + 1}/{run.total_epochs}",
        show_verbose and distributed.is_main_process(),
        eta=dispatch.eta,
        verbose_type=verbose_type,
    )
    spec = _Pass(True, plan.train_step, values, "on_batch_start", "on_batch_end")
    if run_pass(manager, plan, dispatch, dataset, spec, progress) == 0 and run.batch == 0:
        dispatch.close_progress()
        raise ValueError(
            f"`training_dataset` yielded no batches in epoch {run.epoch + 1}; give a non-empty data set (and "
            f"check `drop_last` with a batch size larger than the data). Received: training_dataset={dataset!r}"
        )
    return values.read()


def stand_in(
    manager: ManagerLike, share: DataSource, unpack: Callable[[Any], tuple[Any, Any]] | None = None
) -> Callable[[Any], object] | None:
    """The forward a process whose evaluation share ran out runs for each round another process still runs, when
    the run's strategy evaluates in lockstep (FSDP2 gathers weights in each forward); else None."""
    strategy = manager._strategy
    if strategy is None or not strategy.lockstep_evaluation:
        return None
    split = unpack or unpacker(manager, share)
    device = manager._run_device
    convert = manager._precision.convert_input if manager._precision.converts_input else None

    def forward(batch: Any) -> object:
        x = move_to_device(split(batch)[0], device)
        return manager.forward(x if convert is None else convert(x))

    return forward


def _resumed(data: DataSource, skip: int) -> Any:
    """The rest of a resumed epoch from its global position, nothing before it loaded; None: replay the skipped."""
    total = batches_in(data)
    if total is not None and skip >= total:
        return iter(())  # saved after the epoch's last batch: nothing is left of it
    position = samples_done(data, skip)
    return resume_iterator(data, position) if position is not None else None


def _bar_total(steps_in_epoch: int | None, done: int, budget_left: int | None) -> int | None:
    """The batches an epoch's bar counts: the data's, or fewer when the budget ends first."""
    if budget_left is None or steps_in_epoch is None:
        return steps_in_epoch
    return min(steps_in_epoch, done + budget_left)


def evaluate(
    manager: ManagerLike, plan: Plan, dispatch: Dispatch, dataset: DataSource, description: str, show_verbose: bool
) -> dict[str, float]:
    """One pass of `test_step` over `dataset` where the run is placed (validation and `test`); its summary floats.

    Under torchrun each process takes its whole batches of `dataset` (each sample once, no padding,
    a share may be empty) and every process reads the values of all.

    Raises:
        ValueError: `dataset` yielded no batches (in any process).
    """
    share = evaluation_shards.split(dataset)
    values = manager._evaluation
    values.believe_steps = plan.believe_test_steps
    progress = EpochProgress(batches_in(share), description, show_verbose and distributed.is_main_process())
    spec = _Pass(False, plan.test_step, values, "on_test_batch_start", "on_test_batch_end", stand_in(manager, share))
    done = run_pass(manager, plan, dispatch, share, spec, progress)
    if not evaluation_shards.join(values, done > 0, manager._run_device):
        progress.close()
        what, name = ("to validate on", "val_dataset") if description == "Validation" else ("to test on", "dataset")
        raise ValueError(
            f"The data set {what} yielded no batches; give a non-empty data set. Received: {name}={dataset!r}"
        )
    result = values.read()
    progress.close(result)
    if not result and manager.compiled_losses is None and not manager.compiled_metrics.fns:
        logger.warning(
            f"{description} has nothing to report: the manager has no `loss_fn` and no `metrics`, and `test_step` "
            "returned no values. Give them to the manager (a manager restored with `from_checkpoint(path, model=...)` "
            "gets them with `loss_fn=` and `metrics=`)."
        )
    return result
