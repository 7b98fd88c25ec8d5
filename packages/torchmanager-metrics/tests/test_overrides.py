"""Every extension point of every public metric is honoured: a subclass's `forward` and `update`,
and hooks registered on the module (as `nn.Module.__call__` would run them).

Some metrics compute their state without calling `forward` (pooled counts, feature sums): the
fast path must not hide a subclass's `forward`. The classes come from the package's `__all__`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from metrics_testkit import ABSTRACT, BASES, CASES, Case, build, public_metric_classes, subclass_of

from torchmanager_metrics import AccumulativeFeatureMetric, FeatureMetric, MeanIoU, Metric

ALL: dict[str, Case] = {**CASES, **BASES}
COMPUTING = sorted(set(ALL) - ABSTRACT)
NOT_KEEPING_FEATURES = sorted(n for n in ALL if not issubclass(ALL[n][0].func, AccumulativeFeatureMetric))  # type: ignore[arg-type]


def make(name: str, **methods: Any) -> tuple[Metric, torch.Tensor, torch.Tensor]:
    """The case's metric (a subclass defining `methods`, if any, built with the same arguments) and its batch."""
    constructor, input, target = ALL[name]
    return build(constructor, subclass_of(constructor, **methods) if methods else None), input, target


def features_of(metric: Metric, x: Any) -> Any:
    """What a metric's `forward` and hooks see of a batch: its features for a feature metric (LPIPS's are a list), else the batch."""
    return metric.forward_features(x) if isinstance(metric, FeatureMetric) else x


def test_every_public_metric_class_has_a_case() -> None:
    assert set(public_metric_classes()) <= set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_constant_forward_is_called_and_is_the_result(name: str) -> None:
    calls: list[int] = []

    def forward(self: Metric, input: Any, target: Any = None) -> torch.Tensor:
        calls.append(1)
        return torch.tensor(0.25)

    metric, input, target = make(name, forward=forward)
    for lo, hi in ((0, 1), (1, 2)):
        assert metric(input[lo:hi], target[lo:hi]).item() == 0.25
    assert calls
    assert metric.result.item() == 0.25


@pytest.mark.parametrize("name", COMPUTING)
def test_a_scaling_forward_scales_the_result(name: str) -> None:
    base, input, target = make(name)

    def forward(self: Metric, input: Any, target: Any = None) -> torch.Tensor:
        return 2 * type(base).forward(self, input, target)

    metric, _, _ = make(name, forward=forward)
    metric(input, target)
    expected = 2 * type(base).forward(base, features_of(base, input), features_of(base, target))
    torch.testing.assert_close(metric.result.double(), expected.double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NOT_KEEPING_FEATURES)
def test_a_replaced_forward_is_averaged_over_samples(name: str) -> None:
    """Where the state is not the kept features, a subclass's forward values are averaged, weighted by batch size."""
    values = iter([1.0, 4.0, 10.0])

    def forward(self: Metric, input: Any, target: Any = None) -> torch.Tensor:
        return torch.tensor(next(values))

    metric, input, target = make(name, forward=forward)
    sizes = [1, 1, 0]  # a 0-sample batch holds nothing: its value is not counted
    start = 0
    for size in sizes:
        metric(input[start : start + size], target[start : start + size])
        start += size
    assert metric.result.item() == pytest.approx((1.0 + 4.0) / 2)


@pytest.mark.parametrize("name", COMPUTING)
def test_a_replaced_update_runs_on_every_call(name: str) -> None:
    seen: list[int] = []

    def update(self: Metric, input: Any, target: Any = None) -> torch.Tensor:
        seen.append(1)
        value = type(self).__mro__[1].update(self, input, target)  # type: ignore[attr-defined]
        return torch.zeros_like(value) - 1

    metric, input, target = make(name, update=update)
    reference, _, _ = make(name)
    returned = metric(input, target)
    reference(input, target)
    assert seen == [1]
    assert bool((returned == -1).all())
    torch.testing.assert_close(metric.result, reference.result, equal_nan=True)


@pytest.mark.parametrize("name", COMPUTING)
def test_forward_hooks_see_each_call_and_may_replace_what_it_returns(name: str) -> None:
    metric, input, target = make(name)
    reference, _, _ = make(name)
    seen: list[tuple[Any, ...]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        seen.append((module, args, output))
        return torch.full_like(output, 7.0, dtype=torch.float32)

    handle = metric.register_forward_hook(hook)
    returned = metric(input, target)
    expected = reference(input, target)
    assert len(seen) == 1 and seen[0][0] is metric
    seen_input, features = seen[0][1][0], features_of(metric, input)
    assert seen_input is input or all(torch.equal(a, b) for a, b in zip(seen_input, features, strict=True))
    torch.testing.assert_close(seen[0][2], expected, equal_nan=True)
    assert bool((returned == 7).all())  # the hook's replacement is what the call returns ...
    torch.testing.assert_close(metric.result, reference.result, equal_nan=True)  # ... the state kept the batch
    handle.remove()
    metric(input, target)
    assert len(seen) == 1


@pytest.mark.parametrize("name", COMPUTING)
def test_forward_pre_hooks_may_replace_the_batch_the_state_records(name: str) -> None:
    metric, input, target = make(name)
    other = changed_input(name)

    def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (features_of(metric, other), args[1])

    metric.register_forward_pre_hook(pre_hook)
    reference = make(name)[0]
    torch.testing.assert_close(metric(input, target), reference(other, target), equal_nan=True)
    torch.testing.assert_close(metric.result, reference.result, equal_nan=True)


def changed_input(name: str) -> torch.Tensor:
    """An input of the case's shape and dtype whose value differs from the case's own input's."""
    _, input, target = ALL[name]
    original = make(name)[0]
    original(input, target)
    floats = input.is_floating_point()
    for candidate in (-input.flip(0), input.flip(0) + 1, input.roll(1, -1) * 3, torch.zeros_like(input)):
        if not floats:
            candidate = candidate.remainder(3).to(input.dtype)
        metric = make(name)[0]
        metric(candidate, target)
        if not torch.allclose(metric.result.double(), original.result.double(), equal_nan=True):
            return candidate
    raise AssertionError(f"no changed input found for {name}")


def test_hooks_see_the_entries_picked_by_target() -> None:
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    metric = Metric(lambda a, b: (a - b).abs().mean(), target="out")
    seen: list[tuple[Any, ...]] = []
    metric.register_forward_pre_hook(lambda module, args: seen.append(args))
    metric({"out": x, "aux": y}, {"out": y})
    assert seen[0][0] is x and seen[0][1] is y


def test_global_module_hooks_fire_for_metrics_too() -> None:
    from torch.nn.modules.module import register_module_forward_hook

    seen: list[torch.nn.Module] = []
    metric, input, target = make("MeanIoU")
    handle = register_module_forward_hook(lambda module, args, output: seen.append(module))
    try:
        metric(input, target)
    finally:
        handle.remove()
    metric(input, target)
    assert seen == [metric]


def test_the_issue_example_a_mean_iou_with_its_own_forward() -> None:
    """Issue 11, kind 6: the override was never called; MeanIoU's pooled counts were reported instead."""

    class HalfIoU(MeanIoU):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return super().forward(input, target) / 2

    _, maps, masks = ALL["MeanIoU"]
    metric = HalfIoU()
    metric(maps, masks)
    torch.testing.assert_close(metric.result, MeanIoU().forward(maps, masks) / 2)
