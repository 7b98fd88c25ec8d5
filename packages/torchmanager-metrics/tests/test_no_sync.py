"""The hot path: a metric update never reads a tensor back to the host.

On CPU there is no device to wait for, so the test forbids what would wait on one: reading
values (`.item()`, `.tolist()`, `float()`, `bool()`, `.cpu()`, `.numpy()`) and the ops whose
output size depends on the data (`nonzero`, `bincount`, `unique`), which sync on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from torchmanager_metrics import (
    F1,
    FID,
    HD95,
    KID,
    LPIPS,
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

gen = torch.Generator().manual_seed(0)
LOGITS, LABELS = torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)
MAPS, MASKS = torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2, 8, 8), generator=gen)
IMAGES = torch.rand(2, 1, 48, 48, generator=gen)
FEATURES = torch.randn(6, 4, generator=gen)

CASES: dict[str, tuple[Callable[[], Metric], torch.Tensor, torch.Tensor]] = {
    "Accuracy": (Accuracy, LOGITS.argmax(1), LABELS),
    "SparseCategoricalAccuracy": (SparseCategoricalAccuracy, LOGITS, LABELS),
    "CategoricalAccuracy": (CategoricalAccuracy, LOGITS, torch.nn.functional.one_hot(LABELS, 3).float()),
    "BinaryAccuracy": (BinaryAccuracy, LOGITS[:, 0].sigmoid(), LABELS.clamp(max=1)),
    "TopKAccuracy": (lambda: TopKAccuracy(2), LOGITS, LABELS),
    "ConfusionMatrix": (lambda: ConfusionMatrix(3), MAPS, MASKS),
    "Precision": (Precision, MAPS, MASKS),
    "Recall": (lambda: Recall(average="weighted", num_classes=3), MAPS, MASKS),
    "F1": (lambda: F1(average="macro", num_classes=3), MAPS, MASKS),
    "MeanIoU": (MeanIoU, MAPS, MASKS),
    "InstanceIoU": (lambda: InstanceIoU(3), MAPS, MASKS),
    "Dice": (lambda: Dice(3), MAPS, MASKS),
    "PartialDice": (lambda: PartialDice(1), MAPS, MASKS),
    "HD95": (HD95, MAPS, MASKS),
    "MAE": (MAE, IMAGES, IMAGES.flip(0)),
    "MSE": (MSE, IMAGES, IMAGES.flip(0)),
    "CosineSimilarity": (CosineSimilarity, FEATURES, FEATURES.flip(0)),
    "PSNR": (PSNR, IMAGES, IMAGES.flip(0)),
    "SSIM": (lambda: SSIM(1), IMAGES, IMAGES.flip(0)),
    "MS_SSIM": (lambda: MS_SSIM(1, weights=[0.5, 0.5]), IMAGES, IMAGES.flip(0)),
    "FID": (FID, FEATURES, FEATURES.flip(0)),
    "KID": (KID, FEATURES, FEATURES.flip(0)),
    "ExtractorScore": (ExtractorScore, FEATURES, LABELS),
    "LPIPS": (LPIPS, [MAPS, MAPS.mean((2, 3))], [MAPS.flip(0), MAPS.flip(0).mean((2, 3))]),  # type: ignore[dict-item]  # feature maps
}


def forbid(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a metric update read a tensor back to the host")

    for name in (
        "item",
        "tolist",
        "cpu",
        "numpy",
        "nonzero",
        "bincount",
        "unique",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
    ):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for name in ("nonzero", "bincount", "unique", "argwhere"):
        monkeypatch.setattr(torch, name, refuse)


@pytest.mark.parametrize("name", sorted(CASES))
def test_updates_do_not_read_tensors_back(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, input, target = CASES[name]
    metric = make()
    metric(input, target)  # the first batch after a reset places the state
    forbid(monkeypatch)
    metric(input, target)
    monkeypatch.undo()
    assert metric.result.numel() >= 1


def test_the_guard_catches_a_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    metric = FID()
    metric(FEATURES, FEATURES.flip(0))
    forbid(monkeypatch)
    with pytest.raises(AssertionError, match="read a tensor back"):
        metric.compute()  # compute may read to the host (FID's square root does): updates may not
    with pytest.raises(AssertionError, match="read a tensor back"):
        torch.bincount(LABELS)


def test_every_exported_metric_class_is_covered() -> None:
    import torchmanager_metrics

    bases = {"Metric", "BaseMetric", "FeatureMetric", "AccumulativeFeatureMetric", "BinaryConfusionMatrix"}
    classes = {
        n for n in torchmanager_metrics.__all__ if isinstance(getattr(torchmanager_metrics, n), type) and n not in bases
    }
    assert classes - {"MetricFn", "Reduction", "LPIPSNetType"} <= set(CASES)
