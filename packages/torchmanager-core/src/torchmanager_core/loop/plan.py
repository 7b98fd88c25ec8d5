"""Every decision a run takes once, before its first batch, in one frozen `Plan` the loop reads.

Who owns what: which step runs (the user's, or the counting shortcut of the default step),
whether a step's values are read, which values a custom step is believed on, which hooks are
called, whether the processes agree on stopping after each batch, the accumulation window and
clipping. Nothing re-checks these per batch. A method of the manager is "the default" when it
carries the `default` mark: a subclass overriding it is a custom step, whatever it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import distributed
from ..callbacks import CallbackList
from .protocol import ManagerLike

__all__ = ["Plan", "default", "is_default", "plan_evaluation", "plan_fit"]

F = TypeVar("F", bound=Callable[..., Any])

Step = Callable[[Any, Any], Mapping[str, Any]]


def default(method: F) -> F:
    """Mark a manager method as the default the plan may take a shortcut around."""
    method.__torchmanager_default__ = True  # type: ignore[attr-defined]
    return method


def is_default(manager: object, name: str) -> bool:
    """Whether `manager`'s class keeps the default `name` method (no subclass overrides it)."""
    return bool(getattr(getattr(type(manager), name, None), "__torchmanager_default__", False))


@dataclass(frozen=True)
class Plan:
    """The once-per-run decisions (see the module docstring).

    Attributes:
        train_step: The step each training batch runs: `train_step`, or the default step's counting
            sibling when the default runs and nothing reads its values.
        test_step: The step each evaluation batch runs.
        believe_train_steps: Whether the loss values a training step returns are the epoch's (a custom step).
        believe_test_steps: The same for evaluation steps.
        agree_each_step: Whether every process agrees on stopping after each batch (torchrun, with a
            stop that may come between batches: a preemption signal, a custom step or `_train`, a batch hook).
        accumulate: Batches whose gradients are summed before each optimizer update.
        clip_norm: The total L2 norm gradients are clipped to, or None.
        clip_value: The bound each gradient element is clipped to, or None.
        plain_backward: Whether a backward is `loss.backward()` as it is (no window to divide by, no
            scaling, no gradient sync to hold back).
        plain_update: Whether an update is `optimizer.step()` then `zero_grad()` (no window, no
            clipping, a precision that steps the optimizer as it is, an optimizer hook counting it).
        counts_updates: Whether `optimize` counts the updates itself (an optimizer without step hooks).
    """

    train_step: Step
    test_step: Step
    believe_train_steps: bool
    believe_test_steps: bool
    agree_each_step: bool
    accumulate: int
    clip_norm: float | None
    clip_value: float | None
    plain_backward: bool = False
    plain_update: bool = False
    counts_updates: bool = False


def plan_fit(
    manager: ManagerLike, callbacks: CallbackList, signals_deferred: bool, updates_hooked: bool = True
) -> Plan:
    """The plan of a `fit` of `manager` with `callbacks` (`signals_deferred`: preemption signals are noted;
    `updates_hooked`: an optimizer hook counts the updates, else `optimize` counts each step it calls)."""
    custom_step = not is_default(manager, "train_step")
    reads_values = custom_step or callbacks.reads_batch_summary or not is_default(manager, "eval")
    mid_epoch_stop = (
        custom_step
        or not is_default(manager, "_train")
        or callbacks.uses("on_batch_start")
        or callbacks.uses("on_batch_end")
    )
    accumulate, precision = manager.accumulate_grad_batches, manager._precision
    clipping = manager.clip_grad_norm is not None or manager.clip_grad_value is not None
    return Plan(
        train_step=manager.train_step if reads_values else manager._counting_train_step,
        test_step=manager.test_step,
        believe_train_steps=custom_step,
        believe_test_steps=not is_default(manager, "test_step"),
        agree_each_step=distributed.is_distributed() and (signals_deferred or mid_epoch_stop),
        accumulate=accumulate,
        clip_norm=manager.clip_grad_norm,
        clip_value=manager.clip_grad_value,
        plain_backward=accumulate == 1 and not precision.scales_loss,
        plain_update=accumulate == 1 and not clipping and precision.plain_step and updates_hooked,
        counts_updates=not updates_hooked,
    )


def plan_evaluation(manager: ManagerLike) -> Plan:
    """The plan of a `test` or `predict` outside `fit` (nothing trains)."""
    return Plan(
        train_step=manager.train_step,
        test_step=manager.test_step,
        believe_train_steps=False,
        believe_test_steps=not is_default(manager, "test_step"),
        agree_each_step=False,
        accumulate=1,
        clip_norm=None,
        clip_value=None,
    )
