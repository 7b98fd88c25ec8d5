"""A loss's epoch value is what one call on the whole data set gives, however the data is batched.

A batch mean divides a sum by a denominator that depends on the batch: the labels cross entropy
did not ignore (weighted by their class weight), the elements a regression averages. Each loss
here is streamed over uneven batches, some holding only ignored labels, and its `result`
compared with torch.nn.functional (or the focal formula by hand) applied once, in float64, to
all the data. A mean of batch means weighted by the batch size, which the loss kept before,
differs from it by up to 30% on these inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import (
    MAE,
    MSE,
    BCEWithLogits,
    CrossEntropy,
    FocalCrossEntropy,
    KLDiv,
    Loss,
    MultiLosses,
)

IGNORED = 255
SIZES = (5, 1, 7, 3, 2)
CLASS_WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 0.25])


def _labels(n: int, *spatial: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n, *spatial), generator=generator)
    y[torch.rand(y.shape, generator=generator) < 0.4] = IGNORED
    y[1:3] = IGNORED  # samples 1 and 2 hold only ignored labels: in batches of 1 or 2, nothing counts
    return y


def _batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    bounds = torch.tensor((0, *SIZES)).cumsum(0).tolist()
    return [(x[start:end], y[start:end]) for start, end in itertools.pairwise(bounds)]


def _stream(loss: Loss, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for batch_x, batch_y in _batches(x, y):
        loss(batch_x, batch_y)
    return loss.result


def _focal_by_hand(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    log_p = x.double().movedim(1, -1)[y != IGNORED].log_softmax(-1)
    log_p_true = log_p.gather(1, y[y != IGNORED][:, None]).squeeze(1)
    return (-((1 - log_p_true.exp()) ** gamma) * log_p_true).mean()


SPATIAL = {"(N, C)": (), "(N, C, L)": (6,), "(N, C, H, W)": (3, 5), "(N, C, D, H, W)": (2, 2, 3)}


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS], ids=["unweighted", "class weights"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=["hard", "label smoothing"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_divides_by_the_labels_it_did_not_ignore(
    spatial: tuple[int, ...], class_weights: torch.Tensor | None, smoothing: float, dtype: torch.dtype
) -> None:
    n = sum(SIZES)
    x = torch.randn(n, 4, *spatial, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = _labels(n, *spatial)
    loss = CrossEntropy(class_weights, ignore_index=IGNORED, label_smoothing=smoothing)
    expected = F.cross_entropy(
        x.double(),
        y,
        weight=None if class_weights is None else class_weights.double(),
        ignore_index=IGNORED,
        label_smoothing=smoothing,
    )
    weights = None if class_weights is None else class_weights.double()
    by_batch_size = sum(  # a mean of batch means weighted by batch size: what the batching changes
        F.cross_entropy(bx.double(), by, weight=weights, ignore_index=IGNORED, label_smoothing=smoothing).nan_to_num()
        * len(bx)
        for bx, by in _batches(x, y)
    )
    assert not torch.isclose(torch.as_tensor(by_batch_size / n), expected, rtol=1e-4)  # 10x the tolerance below
    torch.testing.assert_close(_stream(loss, x, y).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial", [(), (3, 5)], ids=["(N, C)", "(N, C, H, W)"])
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS], ids=["unweighted", "class weights"])
def test_each_batch_value_and_gradient_are_torchs(spatial: tuple[int, ...], class_weights: torch.Tensor | None) -> None:
    """The value a call returns (and its gradient) is bit for bit `F.cross_entropy` of the batch; a batch of
    ignored labels only is NaN, as in torch."""
    loss = CrossEntropy(class_weights, ignore_index=IGNORED, weight=0.5)
    x = torch.randn(sum(SIZES), 4, *spatial, generator=torch.Generator().manual_seed(2))
    for batch_x, batch_y in _batches(x, _labels(len(x), *spatial)):
        ours_x, torch_x = batch_x.clone().requires_grad_(), batch_x.clone().requires_grad_()
        value = loss(ours_x, batch_y)
        expected = 0.5 * F.cross_entropy(torch_x, batch_y, weight=class_weights, ignore_index=IGNORED)
        assert torch.equal(value, expected) or (value.isnan() and expected.isnan())
        if not expected.isnan():
            value.backward()
            expected.backward()
            assert torch.equal(ours_x.grad, torch_x.grad)  # type: ignore[arg-type]


def test_probability_labels_divide_by_the_positions() -> None:
    x = torch.randn(sum(SIZES), 4, 3, generator=torch.Generator().manual_seed(3))
    y = torch.softmax(torch.randn(x.shape, generator=torch.Generator().manual_seed(4)), 1)
    loss = CrossEntropy(CLASS_WEIGHTS, label_smoothing=0.1)
    expected = F.cross_entropy(x.double(), y.double(), weight=CLASS_WEIGHTS.double(), label_smoothing=0.1)
    torch.testing.assert_close(_stream(loss, x, y).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial", [(), (3, 5)], ids=["(N, C)", "(N, C, H, W)"])
def test_focal_loss_divides_by_the_labels_it_did_not_ignore(spatial: tuple[int, ...]) -> None:
    x = torch.randn(sum(SIZES), 4, *spatial, generator=torch.Generator().manual_seed(5))
    y = _labels(len(x), *spatial)
    loss = FocalCrossEntropy(gamma=2, ignore_index=IGNORED, weight=3)
    torch.testing.assert_close(_stream(loss, x, y).double(), 3 * _focal_by_hand(x, y, 2), rtol=1e-5, atol=1e-6)


def _ragged(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of samples whose length differs from batch to batch (sequences padded per batch)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, length, generator=generator), torch.rand(n, length, generator=generator))
        for n, length in zip(SIZES, (3, 11, 2, 6, 9))
    ]


ELEMENTWISE: dict[str, tuple[Callable[[], Loss], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "MSE": (MSE, lambda x, y: (x - y).pow(2)),
    "MAE": (MAE, lambda x, y: (x - y).abs()),
    "BCEWithLogits": (BCEWithLogits, lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none")),
    "KLDiv mean": (KLDiv, lambda x, y: F.kl_div(x, y, reduction="none")),
}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")  # torch's own, on purpose
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_element_wise_means_divide_by_the_elements(name: str) -> None:
    make, elementwise = ELEMENTWISE[name]
    loss = make()
    batches = _ragged(6)
    for x, y in batches:
        loss(x, y)
    every_element = torch.cat([elementwise(x.double(), y.double()).flatten() for x, y in batches])
    torch.testing.assert_close(loss.result.double(), every_element.mean(), rtol=1e-5, atol=1e-7)


def test_kl_divergence_batchmean_divides_by_the_samples() -> None:
    loss = KLDiv(reduction="batchmean")
    batches = [(torch.log_softmax(x, 1), torch.softmax(y, 1)) for x, y in _ragged(7)]
    for x, y in batches:
        loss(x, y)
    per_sample = torch.cat([F.kl_div(x.double(), y.double(), reduction="none").sum(1) for x, y in batches])
    torch.testing.assert_close(loss.result.double(), per_sample.mean(), rtol=1e-5, atol=1e-7)


def test_multi_losses_total_is_the_sum_of_its_exact_parts() -> None:
    x = torch.randn(sum(SIZES), 4, generator=torch.Generator().manual_seed(8))
    y = _labels(len(x))
    ce = CrossEntropy(CLASS_WEIGHTS, ignore_index=IGNORED, weight=0.5)
    focal = FocalCrossEntropy(gamma=1, ignore_index=IGNORED)
    total = MultiLosses([ce, focal], weight=2)
    _stream(total, x, y)
    expected_ce = 0.5 * F.cross_entropy(x.double(), y, weight=CLASS_WEIGHTS.double(), ignore_index=IGNORED)
    expected_focal = _focal_by_hand(x, y, 1)
    torch.testing.assert_close(ce.result.double(), expected_ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(focal.result.double(), expected_focal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total.result.double(), 2 * (expected_ce + expected_focal), rtol=1e-5, atol=1e-6)


def test_merged_and_reloaded_states_keep_the_denominators() -> None:
    """Two halves merged, and a state saved mid-way then loaded into a new loss, end at the one-call value."""
    x = torch.randn(sum(SIZES), 4, generator=torch.Generator().manual_seed(9))
    y = _labels(len(x))
    batches = _batches(x, y)
    first, second, resumed = (CrossEntropy(CLASS_WEIGHTS, ignore_index=IGNORED) for _ in range(3))
    for batch in batches[:2]:
        first(*batch)
    resumed.load_state_dict(first.state_dict())
    for batch in batches[2:]:
        second(*batch)
        resumed(*batch)
    first.merge_state(second)
    expected = F.cross_entropy(x.double(), y, weight=CLASS_WEIGHTS.double(), ignore_index=IGNORED)
    torch.testing.assert_close(first.result.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(resumed.result.double(), expected, rtol=1e-5, atol=1e-6)


def test_a_state_saved_with_a_sample_count_still_loads() -> None:
    """States saved before the count became a float (an int64 sample count) load and continue."""
    loss = CrossEntropy()
    loss.load_state_dict({"total": torch.tensor(6.0), "count": torch.tensor(3, dtype=torch.int64)})
    x, y = torch.randn(1, 4), torch.tensor([2])
    loss(x, y)
    expected = (6.0 + F.cross_entropy(x.double(), y).item()) / 4
    assert loss.result.item() == pytest.approx(expected, rel=1e-6)


class HalfLoss(CrossEntropy):
    """A subclass whose own `forward` is the batch value: its epoch value is their mean weighted by samples."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * F.cross_entropy(input, target, ignore_index=IGNORED).nan_to_num()


def test_a_subclass_forward_is_weighted_by_its_samples() -> None:
    x = torch.randn(sum(SIZES), 4, generator=torch.Generator().manual_seed(10))
    y = _labels(len(x))
    expected = sum(
        0.5 * F.cross_entropy(bx.double(), by, ignore_index=IGNORED).nan_to_num() * len(bx) for bx, by in _batches(x, y)
    ) / len(x)
    torch.testing.assert_close(_stream(HalfLoss(), x, y).double(), torch.as_tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial", [(), (3, 5)], ids=["(N, C)", "(N, C, H, W)"])
@pytest.mark.parametrize("class_weights", [None, CLASS_WEIGHTS], ids=["unweighted", "class weights"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trained_batches_count_alike_and_a_batch_all_ignored_is_torchs_nan(
    spatial: tuple[int, ...], class_weights: torch.Tensor | None, dtype: torch.dtype
) -> None:
    """Logits with a gradient (training: float32 takes torch's mean and its backward, bfloat16 the widened sum)
    count by the kept labels' weight all the same; a batch whose labels are all ignored returns torch's NaN."""
    x = torch.randn(sum(SIZES), 4, *spatial, generator=torch.Generator().manual_seed(11)).to(dtype)
    y = _labels(len(x), *spatial)
    y[torch.tensor((0, *SIZES[:-1])).cumsum(0)] = 1  # every batch's first sample is labelled: none all ignored
    loss = CrossEntropy(class_weights, ignore_index=IGNORED, weight=2)
    for batch_x, batch_y in _batches(x, y):
        loss(batch_x.clone().requires_grad_(), batch_y)
    weights = None if class_weights is None else class_weights.double()
    expected = 2 * F.cross_entropy(x.double(), y, weight=weights, ignore_index=IGNORED)
    torch.testing.assert_close(loss.result.double(), expected, rtol=1e-5, atol=1e-6)
    all_ignored = torch.full_like(y[:2], IGNORED)
    assert loss(x[:2].clone().requires_grad_(), all_ignored).isnan()
    assert F.cross_entropy(x[:2].float(), all_ignored, ignore_index=IGNORED).isnan()  # torch's own value
