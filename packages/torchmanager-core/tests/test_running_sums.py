"""Running sums in float32 or wider whatever the dtype of the values (issue 11, kind 3), in core alone.

`MeanTracker` (extra summary values, plain-callable losses and metrics) and `CompiledLoss`
(a dict's total) are fed bfloat16, float16, integer and float values over 512+ batches and
compared with a hand loop in float64 over the very same values.
"""

from __future__ import annotations

import pytest
import torch

from torchmanager_core.compiled import CompiledLoss, CompiledMetrics
from torchmanager_core.tracking import MeanTracker, summable

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int64]
SIZES = [1 + i % 3 for i in range(520)]


def values_in(dtype: torch.dtype, count: int, seed: int = 0) -> list[torch.Tensor]:
    """`count` scalars exactly representable in `dtype`, spread over [0, 600) (float16 holds up to 65504)."""
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.rand(count, generator=gen, dtype=torch.float64) * 600
    return list((drawn.round() if not dtype.is_floating_point else drawn).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_tracker_mean_is_the_float64_mean_of_the_values(dtype: torch.dtype) -> None:
    values = values_in(dtype, len(SIZES))
    tracker = MeanTracker()
    for value, n in zip(values, SIZES):
        tracker.update("x", value, n)
    expected = sum(v.double() * n for v, n in zip(values, SIZES)) / sum(SIZES)
    mean = tracker.means()["x"]
    assert mean.dtype in (torch.float32, torch.float64)
    torch.testing.assert_close(mean.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("dtype", "value"), [(torch.bfloat16, 1.0), (torch.float16, 1000.0), (torch.bfloat16, 0.5)])
def test_the_issues_constant_values_read_back_exactly(dtype: torch.dtype, value: float) -> None:
    tracker = MeanTracker()
    for n in SIZES[:512]:
        tracker.update("x", torch.tensor(value, dtype=dtype), n)
    assert tracker.means()["x"].item() == value  # before: 0.5 (a bfloat16 sum stops at 256) and inf (float16)


def test_a_narrow_total_from_an_older_checkpoint_is_widened_on_load() -> None:
    tracker = MeanTracker()
    tracker.load_state_dict({"totals": {"x": torch.tensor(256.0, dtype=torch.bfloat16)}, "counts": {"x": 256}})
    for _ in range(256):
        tracker.update("x", torch.tensor(1.0, dtype=torch.bfloat16))
    assert tracker.means()["x"].item() == 1.0


def test_summable_widens_only_what_is_narrower_than_float32_and_keeps_the_gradient() -> None:
    x = torch.tensor(3.0, dtype=torch.bfloat16, requires_grad=True)
    wide = summable(x)
    assert wide.dtype == torch.float32 and wide.requires_grad
    (2 * wide).backward()
    assert x.grad is not None and x.grad.item() == 2.0
    for dtype in (torch.float32, torch.float64):
        same = torch.tensor(1.0, dtype=dtype)
        assert summable(same) is same
    assert summable(torch.tensor(3)).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_a_dict_of_plain_losses_sums_and_tracks_in_float32(dtype: torch.dtype) -> None:
    """Parts computed in `dtype` (as under autocast): the total is taken in float32, every mean is exact."""
    parts = {"a": lambda y, t: y.pow(2).mean(), "b": lambda y, t: y.abs().mean()}
    compiled = CompiledLoss(parts)
    values = values_in(dtype, len(SIZES), seed=1)
    for value, n in zip(values, SIZES):
        root = value.double().sqrt().to(dtype)
        total = compiled(torch.full((n,), float(root), dtype=dtype), torch.zeros(n))
        assert total.dtype == torch.float32
    roots = [v.double().sqrt().to(dtype) for v in values]
    squares = [r.pow(2).double() for r in roots]  # what `pow(2)` gives in `dtype`
    weights = torch.tensor(SIZES, dtype=torch.float64)

    def mean(per_batch: list[torch.Tensor]) -> torch.Tensor:
        return (torch.stack(per_batch) * weights).sum() / weights.sum()

    got = compiled.epoch_values()
    expected_a, expected_b = mean(squares), mean([r.abs().double() for r in roots])
    torch.testing.assert_close(got["a_loss"].double(), expected_a, rtol=1e-6, atol=0)
    torch.testing.assert_close(got["b_loss"].double(), expected_b, rtol=1e-6, atol=0)
    totals = [(r.pow(2).float() + r.abs().float()).double() for r in roots]  # each batch's float32 total
    torch.testing.assert_close(got["loss"].double(), mean(totals), rtol=1e-6, atol=0)


def test_plain_metrics_in_float16_average_exactly() -> None:
    compiled = CompiledMetrics({"peak": lambda y, t: y.amax()})
    for n in SIZES[:512]:
        compiled(torch.full((n,), 1000.0, dtype=torch.float16), torch.zeros(n), training=True)
    assert compiled.epoch_values(training=True)["peak"].item() == 1000.0  # before: inf
