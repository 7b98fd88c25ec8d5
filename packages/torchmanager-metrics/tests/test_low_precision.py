"""Metrics fed bfloat16 or float16 model outputs directly give the float64 value (issue 11, kind 3).

Every metric is streamed over 520 uneven batches (past 256, where a bfloat16 running sum of ones
stops growing) of bfloat16, float16 and float32 tensors, and compared with an independent
reference computed in float64 from the very same values: scikit-learn, scipy, numpy, hand
formulas. The metrics compute in float32 or wider and keep float32-or-wider sums and int64 counts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from metrics_references import (
    reference_dice,
    reference_fid,
    reference_hd,
    reference_inception_score,
    reference_mmd2,
    reference_ms_ssim,
    reference_ssim_and_cs,
)
from metrics_testkit import BASES, CASES, IdentityLPIPS, lpips_reference
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

from torchmanager_metrics import (
    F1,
    FID,
    HD95,
    KID,
    MAE,
    MS_SSIM,
    MSE,
    PSNR,
    SSIM,
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    ConfusionMatrix,
    CosineSimilarity,
    Dice,
    ExtractorScore,
    InstanceIoU,
    MeanIoU,
    Metric,
    PartialDice,
    Precision,
    Recall,
    SparseCategoricalAccuracy,
    TopKAccuracy,
)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SIZES = [1 + i % 3 for i in range(520)]  # 1040 samples in uneven batches
Gen = torch.Generator
Maker = Callable[[int, Gen], torch.Tensor]
Reference = Callable[[torch.Tensor, torch.Tensor], object]


def randn(*shape: int) -> Maker:
    return lambda n, gen: torch.randn(n, *shape, generator=gen)


def rand(*shape: int) -> Maker:
    return lambda n, gen: torch.rand(n, *shape, generator=gen)


def classes(c: int, *shape: int) -> Maker:
    return lambda n, gen: torch.randint(0, c, (n, *shape), generator=gen)


def distinct_scores(n: int, gen: Gen) -> torch.Tensor:
    """Scores without ties (exact in every dtype), so top-k membership has one answer."""
    return torch.stack([torch.randperm(4, generator=gen) for _ in range(n)]).float() * 0.5 - 0.75


def np64(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


def per_image(fn: Callable[[np.ndarray, np.ndarray], float]) -> Reference:
    return lambda x, t: np.mean([fn(np64(a[0]), np64(b[0])) for a, b in zip(x, t)])


def sk(score: Callable[..., float], **kwargs: object) -> Reference:
    """A scikit-learn score of the labels against the argmax of the scores, pixel by pixel."""
    return lambda x, t: score(t.flatten().numpy(), x.argmax(1).flatten().numpy(), zero_division=0, **kwargs)


def iou_per_class_mean(x: torch.Tensor, t: torch.Tensor) -> float:
    m = confusion_matrix(t.flatten().numpy(), x.argmax(1).flatten().numpy(), labels=[0, 1, 2]).astype(np.float64)
    tp = np.diag(m)
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(tp / (m.sum(0) + m.sum(1) - tp)))


def pooled_iou(x: torch.Tensor, t: torch.Tensor) -> float:
    hits = float((x.argmax(1) == t).sum())
    return (hits + 1e-4) / (2 * t.numel() - hits + 1e-4)


def inception_score_of(x: torch.Tensor, t: torch.Tensor) -> float:
    return reference_inception_score(np64(x))


CASES_LOW: dict[str, tuple[Callable[[], Metric], Maker, Maker | None, Reference]] = {
    "Accuracy": (Accuracy, lambda n, g: classes(3)(n, g).float(), classes(3), lambda x, t: (x == t).double().mean()),
    "SparseCategoricalAccuracy": (
        SparseCategoricalAccuracy,
        randn(3),
        classes(3),
        lambda x, t: (x.argmax(1) == t).double().mean(),
    ),
    "CategoricalAccuracy": (
        CategoricalAccuracy,
        randn(3),
        lambda n, g: torch.randn(n, 3, generator=g).softmax(1),
        lambda x, t: (x.argmax(1) == t.argmax(1)).double().mean(),
    ),
    "BinaryAccuracy(from_logits)": (  # logits near 0: a bfloat16 sigmoid rounds them to 0.5
        partial(BinaryAccuracy, from_logits=True),
        lambda n, g: torch.randn(n, 4, generator=g) * 0.02,
        lambda n, g: classes(2, 4)(n, g).float(),
        lambda x, t: (x.sigmoid() > 0.5).eq(t > 0.5).double().mean(),
    ),
    "BinaryAccuracy(threshold=0.3)": (  # probabilities near a threshold bfloat16 cannot hold
        partial(BinaryAccuracy, 0.3),
        lambda n, g: 0.3 + torch.randn(n, 4, generator=g) * 0.002,
        lambda n, g: classes(2, 4)(n, g).float(),
        lambda x, t: (x > 0.3).eq(t > 0.5).double().mean(),
    ),
    "TopKAccuracy": (
        partial(TopKAccuracy, 2),
        distinct_scores,
        classes(4),
        lambda x, t: (x.topk(2, dim=1).indices == t[:, None]).any(1).double().mean(),
    ),
    "ConfusionMatrix": (
        partial(ConfusionMatrix, 3),
        randn(3, 4, 4),
        classes(3, 4, 4),
        lambda x, t: confusion_matrix(t.flatten().numpy(), x.argmax(1).flatten().numpy(), labels=[0, 1, 2]),
    ),
    "Precision": (Precision, randn(3, 4, 4), classes(3, 4, 4), lambda x, t: precision_score(
        (t == 1).flatten().numpy(), (x.argmax(1) == 1).flatten().numpy(), zero_division=0
    )),
    "Recall": (
        partial(Recall, average="weighted", num_classes=3),
        randn(3, 4, 4),
        classes(3, 4, 4),
        sk(recall_score, average="weighted", labels=[0, 1, 2]),
    ),
    "F1": (partial(F1, average="macro", num_classes=3), randn(3, 4, 4), classes(3, 4, 4), sk(f1_score, average="macro")),
    "MeanIoU": (MeanIoU, randn(3, 4, 4), classes(3, 4, 4), pooled_iou),
    "InstanceIoU": (partial(InstanceIoU, 3), randn(3, 4, 4), classes(3, 4, 4), iou_per_class_mean),
    "Dice": (partial(Dice, 3), randn(3, 4, 4), classes(3, 4, 4), lambda x, t: reference_dice(x, t, 3)),
    "PartialDice": (partial(PartialDice, 1), randn(3, 4, 4), classes(3, 4, 4), lambda x, t: f1_score(
        (t == 1).flatten().numpy(), (x.argmax(1) == 1).flatten().numpy()
    )),
    "HD95": (HD95, randn(3, 6, 6), classes(3, 6, 6), lambda x, t: np.mean([
        reference_hd(p.numpy() != 0, q.numpy() != 0) for p, q in zip(x.argmax(1), t)
    ])),
    "MAE": (MAE, rand(1, 6, 6), rand(1, 6, 6), lambda x, t: (x - t).abs().mean()),
    "MSE": (MSE, rand(1, 6, 6), rand(1, 6, 6), lambda x, t: (x - t).square().mean()),
    "CosineSimilarity": (CosineSimilarity, randn(4), randn(4), lambda x, t: F.cosine_similarity(x, t, dim=1).mean()),
    "PSNR": (PSNR, rand(1, 6, 6), rand(1, 6, 6), lambda x, t: (10 * torch.log10(1 / (x - t).square().mean((1, 2, 3)))).mean()),
    "SSIM": (partial(SSIM, 1, pixel_range=1), rand(1, 12, 12), None, per_image(
        lambda a, b: reference_ssim_and_cs(a, b)[0]
    )),
    "MS_SSIM": (partial(MS_SSIM, 1, pixel_range=1, weights=[0.5, 0.5]), rand(1, 24, 24), None, per_image(
        lambda a, b: reference_ms_ssim(a, b, (0.5, 0.5))
    )),
    "FID": (FID, randn(4), lambda n, g: torch.randn(n, 4, generator=g) * 1.5 + 0.3, lambda x, t: reference_fid(
        np64(x), np64(t)
    )),
    "KID": (KID, randn(4), lambda n, g: torch.randn(n, 4, generator=g) + 0.5, lambda x, t: 100 * reference_mmd2(
        np64(x), np64(t)
    )),
    "ExtractorScore": (ExtractorScore, lambda n, g: torch.randn(n, 5, generator=g) * 3, classes(5), inception_score_of),
    "LPIPS": (IdentityLPIPS, randn(3, 4, 4), randn(3, 4, 4), lpips_reference),
}  # fmt: skip
"""Each metric: its constructor, how to draw a batch's input and target (None: a noisy copy of the
input, so that similarities are far from 0), and its float64 reference over every sample."""


def test_every_metric_class_is_checked_in_low_precision() -> None:
    checked = {name.split("(")[0] for name in CASES_LOW}
    assert set(CASES) <= checked, sorted(set(CASES) - checked)
    assert not set(BASES) & checked  # the bases compute what their user's `metric_fn` does


def narrow(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if x.is_floating_point() else x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(CASES_LOW))
def test_streamed_low_precision_outputs_give_the_float64_value(name: str, dtype: torch.dtype) -> None:
    factory, make_input, make_target, reference = CASES_LOW[name]
    gen = torch.Generator().manual_seed(0)
    batches = []
    for n in SIZES:
        input = make_input(n, gen)
        target = (
            make_target(n, gen)
            if make_target is not None
            else input * 0.7 + 0.3 * torch.rand(input.shape, generator=gen)
        )
        batches.append((narrow(input, dtype), narrow(target, dtype)))
    metric = factory()
    for input, target in batches:
        metric(input, target)
    wide = [
        (x.double() if x.is_floating_point() else x, t.double() if t.is_floating_point() else t) for x, t in batches
    ]
    expected = reference(torch.cat([x for x, _ in wide]), torch.cat([t for _, t in wide]))
    torch.testing.assert_close(
        metric.result.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(("dtype", "value"), [(torch.bfloat16, 1.0), (torch.float16, 1000.0), (torch.bfloat16, 3.0)])
def test_a_constant_low_precision_value_reads_back_exactly(dtype: torch.dtype, value: float) -> None:
    """The issue's inputs: 512 batches of exactly 1.0 (bfloat16) or 1000.0 (float16)."""
    metric = Metric(lambda input, target: input.mean())
    for n in SIZES[:512]:
        metric(torch.full((n,), value, dtype=dtype), None)
    assert metric.result.item() == value
    assert metric.result.dtype in (torch.float32, torch.float64)


def test_the_sample_count_keeps_growing_past_float32s_2_to_the_24() -> None:
    """The count is int64: in float32, 2**24 + 1 rounds back to 2**24, so single samples stop counting."""
    metric = Metric(lambda input, target: input.mean())
    metric.accumulate(torch.tensor(1.0), 2**24)
    for _ in range(1000):
        metric.accumulate(torch.tensor(0.0), 1)
        metric.result  # noqa: B018  # a read (a progress bar's) between batches
    metric.materialize()  # the samples counted on the host go into the state
    assert metric.count.dtype == torch.int64 and metric.count.item() == 2**24 + 1000
    assert metric.result.item() == pytest.approx(2**24 / (2**24 + 1000), rel=1e-7)


def test_a_state_saved_with_a_float32_count_loads_into_the_int64_count() -> None:
    """Checkpoints written before the count was int64 keep loading, with the same value."""
    metric = Metric(lambda input, target: input.mean())
    metric(torch.arange(6.0), None)
    state = metric.state_dict()
    state["count"] = state["count"].float()
    restored = Metric(lambda input, target: input.mean())
    restored.load_state_dict(state)
    assert restored.count.dtype == torch.int64 and restored.count.item() == 6
    restored(torch.full((2,), 9.0), None)
    assert restored.result.item() == pytest.approx((15 + 18) / 8)
