"""The gradient and update steps behind `Manager.backward` and `Manager.optimize`: accumulation, clipping, precision.

Who owns what: inside a `fit`, a batch's loss is divided by its accumulation window's size, scaled
by the precision, and its backward runs without cross-process reduction until the window's last
batch (the strategy's `gradient_sync`); at the window's end the optimizer steps once: a short last
window's gradients are scaled to its real size, gradients are unscaled (float16) and clipped, the
precision steps the optimizer (skipping an overflowed float16 step) and the gradients are cleared.
Outside `fit` both are plain: `loss.backward()`, `optimizer.step()`, `optimizer.zero_grad()`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .protocol import ManagerLike

__all__ = ["backward", "optimize"]


def backward(manager: ManagerLike, loss: torch.Tensor, inputs: Sequence[torch.Tensor] | None = None) -> None:
    """Compute the gradients of `loss` for the batch being trained (see the module docstring)."""
    plan = manager._plan
    if plan is None or plan.plain_backward:
        if inputs is None:
            loss.backward()  # type: ignore[no-untyped-call]
        else:
            loss.backward(inputs=inputs)  # type: ignore[no-untyped-call]
        return
    if plan.accumulate > 1:  # the pass runs the whole step inside the strategy's `gradient_sync` (`epoch.run_pass`)
        loss = loss / manager._run.window_size(plan.accumulate)
    manager._precision.scale(loss).backward(inputs=inputs)  # type: ignore[no-untyped-call]


def optimize(manager: ManagerLike) -> None:
    """Update the parameters at the end of the batch's accumulation window (every batch without accumulation)."""
    optimizer, plan = manager.optimizer, manager._plan
    if optimizer is None:
        raise ValueError(
            f"`optimize` needs an optimizer: pass one to {type(manager).__name__}(model, optimizer, ...). Received: optimizer=None"
        )
    if plan is None or plan.plain_update:
        optimizer.step()
        optimizer.zero_grad()  # the form upstream called: a wrapper whose `zero_grad` takes no argument works
        return
    run = manager._run
    if plan.accumulate > 1 and not run.window_end(plan.accumulate):
        return
    if plan.accumulate > 1:
        expected, done = run.window_size(plan.accumulate), run.batch % plan.accumulate + 1
        if done != expected:  # the data ended before the window its length promised
            _scale_gradients(optimizer, expected / done)
    precision = manager._precision
    if plan.clip_norm is not None or plan.clip_value is not None:
        _clip(manager, optimizer, plan.clip_norm, plan.clip_value)
    precision.step(optimizer)
    optimizer.zero_grad()
    if plan.counts_updates:
        run.global_step += 1


def _clip(manager: ManagerLike, optimizer: torch.optim.Optimizer, norm: float | None, value: float | None) -> None:
    """Clip the optimizer's gradients (unscaled first) to the total L2 `norm` and each element to `value`."""
    manager._precision.unscale(optimizer)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if norm is not None:
        assert manager._strategy is not None
        manager._strategy.clip_grad_norm(parameters, norm)
    if value is not None:
        torch.nn.utils.clip_grad_value_(parameters, value)


def _scale_gradients(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                parameter.grad.mul_(factor)
