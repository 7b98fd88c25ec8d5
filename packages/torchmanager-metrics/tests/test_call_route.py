"""A metric decides how its calls reach `update` once (issue 19, point 3), not on every call.

Its own hooks are decided on when one is registered or removed, overrides when the class is
made; a call (hooked or not) writes nothing into the metric's instance dict. The values must
stay those of `nn.Module.__call__` around the update (see test_overrides.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook

from torchmanager_metrics import Metric, SparseCategoricalAccuracy
from torchmanager_metrics.call_route import HookedForward


def batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def instance_dict(metric: Metric) -> dict[str, Any]:
    """The instance dict's entries that are not the metric's counters and waiting batches (what a call may change)."""
    return {k: v for k, v in metric.__dict__.items() if k not in ("_num_updates", "_waiting")}


def test_a_call_writes_nothing_into_the_instance_dict_hooked_or_not() -> None:
    metric = SparseCategoricalAccuracy()
    x, y = batch()
    before = instance_dict(metric)
    metric(x, y)
    metric.update_state(x, y)
    assert instance_dict(metric).keys() == before.keys() and "forward" not in metric.__dict__
    metric.register_forward_hook(lambda module, args, output: None)
    hooked = instance_dict(metric)
    route = metric.__dict__["forward"]  # decided at the registration: the hooked route
    assert isinstance(route, HookedForward) and metric.hooked
    for _ in range(3):
        metric(x, y)
        metric.update_state(x, y)
        assert instance_dict(metric) == hooked and metric.__dict__["forward"] is route and not route.armed


def test_removing_the_last_hook_takes_the_direct_route_again() -> None:
    metric = SparseCategoricalAccuracy()
    x, y = batch()
    seen: list[int] = []
    first = metric.register_forward_hook(lambda module, args, output: seen.append(1))
    second = metric.register_forward_pre_hook(lambda module, args: seen.append(2))
    metric(x, y)
    assert seen == [2, 1]
    first.remove()
    assert metric.hooked and isinstance(metric.__dict__["forward"], HookedForward)  # one hook is left
    metric(x, y)
    assert seen == [2, 1, 2]
    second.remove()
    assert not metric.hooked and "forward" not in metric.__dict__
    metric(x, y)
    metric.update_state(x, y)
    assert seen == [2, 1, 2]
    reference = SparseCategoricalAccuracy()
    for _ in range(4):
        reference(x, y)
    torch.testing.assert_close(metric.result, reference.result)


def test_a_handle_used_as_a_context_decides_again_on_exit() -> None:
    metric = SparseCategoricalAccuracy()
    x, y = batch()
    seen: list[Any] = []
    with metric.register_forward_hook(lambda module, args, output: seen.append(output)):
        metric(x, y)
    assert not metric.hooked
    metric(x, y)
    assert len(seen) == 1


def test_the_hooked_route_calls_the_class_forward_when_called_directly() -> None:
    """`metric.forward(...)` stays the batch value without a state change, hooked or not."""
    metric = SparseCategoricalAccuracy()
    x, y = batch()
    metric.register_forward_hook(lambda module, args, output: None)
    value = metric.forward(x, y)
    torch.testing.assert_close(value, (x.argmax(1) == y).float().mean())
    assert torch.isnan(metric.result)  # nothing counted


def test_a_pre_hook_that_raises_leaves_the_route_unarmed() -> None:
    metric = SparseCategoricalAccuracy()
    x, y = batch()

    def refuse(module: torch.nn.Module, args: Any) -> None:
        raise RuntimeError("refused")

    handle = metric.register_forward_pre_hook(refuse)
    try:
        metric(x, y)
    except RuntimeError:
        pass
    assert not metric.__dict__["forward"].armed
    handle.remove()
    torch.testing.assert_close(metric.forward(x, y), (x.argmax(1) == y).float().mean())


def test_a_global_hook_needs_no_registration_on_the_metric_and_fires_for_update_state() -> None:
    metric = SparseCategoricalAccuracy()
    x, y = batch()
    seen: list[torch.nn.Module] = []
    handle = register_module_forward_hook(lambda module, args, output: seen.append(module))
    try:
        metric.update_state(x, y)
        metric(x, y)
    finally:
        handle.remove()
    metric(x, y)
    assert seen == [metric, metric]


def test_overrides_are_decided_per_class() -> None:
    """A subclass replacing `forward` is a sample-weighted mean of its values on both paths; replacing `update`
    makes `update_state` call it."""

    class Doubled(SparseCategoricalAccuracy):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(input, target)

    calls: list[int] = []

    class Counted(SparseCategoricalAccuracy):
        def update(self, input: Any, target: Any) -> torch.Tensor:
            calls.append(1)
            return super().update(input, target)

    assert Doubled._own_forward and not Doubled._counts_directly
    assert not Counted._own_forward and not Counted._counts_directly
    assert SparseCategoricalAccuracy._counts_directly and not SparseCategoricalAccuracy._own_forward
    (x1, y1), (x2, y2) = batch(2, 1), batch(6, 2)
    doubled, counted = Doubled(), Counted()
    doubled(x1, y1)
    doubled.update_state(x2, y2)
    counted.update_state(x1, y1)
    counted(x2, y2)
    assert calls == [1, 1]
    hits1, hits2 = (x1.argmax(1) == y1).float().mean(), (x2.argmax(1) == y2).float().mean()
    torch.testing.assert_close(doubled.result, 2 * (2 * hits1 + 6 * hits2) / 8)
    torch.testing.assert_close(counted.result, ((x1.argmax(1) == y1).sum() + (x2.argmax(1) == y2).sum()) / 8.0)


def test_a_metric_with_a_function_decides_no_route_of_its_own() -> None:
    metric = Metric(lambda a, b: (a - b).abs().mean())
    x, y = torch.randn(3, 2), torch.randn(3, 2)
    metric(x, y)
    assert "forward" not in metric.__dict__ and not metric.hooked
