"""`test` and `predict`, and the evaluation mode validation shares with them.

Who owns what: `evaluation` puts the model, losses and metrics in eval mode (each submodule's mode
comes back after), gives the strategy's module to evaluate and, inside a `fit`, leaves the run's
random state as it found it; `test` runs one evaluation pass (`epoch.evaluate`) with its own
callbacks; `predict` collects the model's outputs in the data set's order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .. import devices, distributed, evaluation_shards, strategy
from ..callbacks import Callback, CallbackList
from ..epoch_values import running
from ..loader_workers import protect_workers
from ..modes import evaluating
from ..progress import EpochProgress
from ..run_log import log_test_result
from ..strategy.lockstep import lockstep
from ..tracking import VAL_PREFIX
from .dispatch import Dispatch
from .epoch import DataSource, batches, batches_in, evaluate, stand_in
from .plan import plan_evaluation
from .protocol import ManagerLike
from .run import RandomSnapshot

__all__ = ["evaluation", "predict", "test", "with_manager"]


def with_manager(callbacks_list: Sequence[Callback] | None, manager: object) -> CallbackList:
    """The run's callback list, each callback given `manager` (their hooks were checked when listed)."""
    callbacks = CallbackList(callbacks_list)
    callbacks.set_manager(manager)
    return callbacks


@contextlib.contextmanager
def evaluation(manager: ManagerLike, data: object = None) -> Iterator[None]:
    """Evaluate in the body: eval mode for the model, losses and metrics, the strategy's module to evaluate, no grad.

    Inside a `fit`, every generator the run draws from comes back after too (torch's, CUDA's, numpy's,
    Python's, and those `data` owns: the training data set may be the one evaluated), by the same
    definition a checkpoint keeps: with or without validation, or a `test()` from a callback, training
    draws the same numbers.
    """
    random_state = RandomSnapshot.take(data) if manager._run.active else None
    plain = [
        fn
        for fn in manager._stream_objects()
        if not isinstance(fn, torch.nn.Module) and callable(getattr(fn, "eval", None))
    ]
    for fn in plain:
        fn.eval()  # a stateful metric that is not a module, as upstream's loop called it
    with evaluating([manager.raw_model, *manager._stream_modules()]), strategy.evaluated(manager), torch.no_grad():
        try:
            yield
        finally:
            for fn in plain:
                if callable(getattr(fn, "train", None)):
                    fn.train()
            if random_state is not None:
                random_state.restore(data)


def test(
    manager: ManagerLike,
    dataset: DataSource,
    callbacks_list: Sequence[Callback] | None,
    show_verbose: bool,
    description: str = "Test",
) -> dict[str, float]:
    """One evaluation pass of `manager.test_step` over `dataset`, with `callbacks_list`'s test hooks; its summary."""
    callbacks = with_manager(callbacks_list, manager)
    dispatch = Dispatch(callbacks)
    plan = manager._plan or plan_evaluation(manager)
    dispatch("on_test_start")
    manager._sync_streams()
    manager._last_values = manager._evaluation
    with running(manager._passes, manager._evaluation), evaluation(manager, dataset):
        summary = _unprefixed(manager, evaluate(manager, plan, dispatch, dataset, description, show_verbose))
    dispatch("on_test_end", summary)
    if description == "Test":
        log_test_result(summary)
    return summary


def _unprefixed(manager: ManagerLike, summary: dict[str, float]) -> dict[str, float]:
    """An evaluation's summary as upstream 1.5 named it: a metric `val_x` (which runs only when evaluating) as `x`.

    Unambiguous: a metric `x` beside `val_x` is refused when the manager is made. Validation's values are
    prefixed `val_` once when merged into an epoch's summary, so they read `val_x` there.
    """
    fns = manager.compiled_metrics.fns
    return {name.removeprefix(VAL_PREFIX) if name in fns else name: value for name, value in summary.items()}


def predict(manager: ManagerLike, dataset: DataSource, show_verbose: bool) -> list[Any]:
    """The model's outputs for each batch of `dataset` (inputs, or `(x, y)` pairs), on the CPU, in order.

    Raises:
        ValueError: `dataset` yielded no batches (in any process).
    """
    outputs: list[Any] = []
    share = evaluation_shards.split(dataset)
    protect_workers(share)
    progress = EpochProgress(batches_in(share), "Predict", show_verbose and distributed.is_main_process())
    with evaluation(manager, dataset):
        convert = manager._precision.convert_input if manager._precision.converts_input else None
        forward = stand_in(manager, share, _input_only)
        source = lockstep(share, forward) if forward is not None else share  # a sharded model: in step
        for x, _, _ in batches(source, _input_only, manager._run_device, convert):
            y, _ = manager.forward(x)
            outputs.append(devices.move_to_device(y.detach() if isinstance(y, torch.Tensor) else y, devices.CPU))
            progress.step(dict)  # no values to show: just advance
    progress.close()
    outputs = evaluation_shards.gather(outputs, share)
    if not outputs:
        raise ValueError(
            f"The data set to predict on yielded no batches; give a non-empty data set. Received: dataset={dataset!r}"
        )
    return outputs


def _input_only(batch: Any) -> tuple[Any, None]:
    """A prediction batch: the input of an `(x, y)` pair, or the batch itself."""
    return (batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch), None
