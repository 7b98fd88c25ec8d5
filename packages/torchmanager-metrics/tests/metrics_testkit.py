"""One small batch for every public metric class, shared by the tests that must cover them all.

`CASES` holds the concrete classes, `BASES` the extension bases (built with a `metric_fn` where
they take one, so they compute something); each case is `(constructor, input, target)`, the
constructor a `functools.partial` of the class so that a test can build a subclass with the same
arguments (`build`). `public_metric_classes()` lists what the package exports, so a test can
check that it covers every class.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

import torchmanager_metrics
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
    AccumulativeFeatureMetric,
    Accuracy,
    BinaryAccuracy,
    BinaryConfusionMatrix,
    CategoricalAccuracy,
    ConfusionMatrix,
    CosineSimilarity,
    Dice,
    ExtractorScore,
    FeatureMetric,
    InstanceIoU,
    MeanIoU,
    Metric,
    PartialDice,
    Precision,
    Recall,
    SparseCategoricalAccuracy,
    TopKAccuracy,
)
from torchmanager_metrics.lpips import LPIPSNetType

Case = tuple["partial[Metric]", torch.Tensor, torch.Tensor]

gen = torch.Generator().manual_seed(0)
LOGITS, LABELS = torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)
MAPS, MASKS = torch.randn(2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2, 8, 8), generator=gen)
IMAGES = torch.rand(2, 1, 48, 48, generator=gen)
FEATURES = torch.randn(6, 4, generator=gen)


def abs_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (input - target).abs().mean()


class IdentityLPIPS(LPIPS):
    """LPIPS over a 12-layer network of identities cut as AlexNet is: five slices, each giving the image itself.

    Its value is five times eq. 1's per-layer distance of the images, computable by hand.
    """

    def __init__(self) -> None:
        super().__init__(torch.nn.Sequential(*(torch.nn.Identity() for _ in range(12))), LPIPSNetType.ALEX)


def lpips_reference(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Zhang et al. 2018, eq. 1, with every weight 1, for `IdentityLPIPS`: the sample mean, by hand.

    The images are first rescaled by LPIPS's scaling layer (its published shift and scale per channel).
    """
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=x.dtype).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=x.dtype).view(1, 3, 1, 1)
    x, t = (x - shift) / scale, (t - shift) / scale
    per_layer = (F.normalize(x, dim=1) - F.normalize(t, dim=1)).square().sum(1).flatten(1).mean(1)
    return 5 * per_layer.mean()


CASES: dict[str, Case] = {
    "Accuracy": (partial(Accuracy), LOGITS.argmax(1), LABELS),
    "SparseCategoricalAccuracy": (partial(SparseCategoricalAccuracy), LOGITS, LABELS),
    "CategoricalAccuracy": (partial(CategoricalAccuracy), LOGITS, torch.nn.functional.one_hot(LABELS, 3).float()),
    "BinaryAccuracy": (partial(BinaryAccuracy), LOGITS[:, 0].sigmoid(), LABELS.clamp(max=1)),
    "TopKAccuracy": (partial(TopKAccuracy, 2), LOGITS, LABELS),
    "ConfusionMatrix": (partial(ConfusionMatrix, 3), MAPS, MASKS),
    "Precision": (partial(Precision), MAPS, MASKS),
    "Recall": (partial(Recall, average="weighted", num_classes=3), MAPS, MASKS),
    "F1": (partial(F1, average="macro", num_classes=3), MAPS, MASKS),
    "MeanIoU": (partial(MeanIoU), MAPS, MASKS),
    "InstanceIoU": (partial(InstanceIoU, 3), MAPS, MASKS),
    "Dice": (partial(Dice, 3), MAPS, MASKS),
    "PartialDice": (partial(PartialDice, 1), MAPS, MASKS),
    "HD95": (partial(HD95), MAPS, MASKS),
    "MAE": (partial(MAE), IMAGES, IMAGES.flip(0)),
    "MSE": (partial(MSE), IMAGES, IMAGES.flip(0)),
    "CosineSimilarity": (partial(CosineSimilarity), FEATURES, FEATURES.flip(0)),
    "PSNR": (partial(PSNR), IMAGES, IMAGES.flip(0)),
    "SSIM": (partial(SSIM, 1), IMAGES, IMAGES.flip(0)),
    "MS_SSIM": (partial(MS_SSIM, 1, weights=[0.5, 0.5]), IMAGES, IMAGES.flip(0)),
    "FID": (partial(FID), FEATURES, FEATURES.flip(0)),
    "KID": (partial(KID), FEATURES, FEATURES.flip(0)),
    "ExtractorScore": (partial(ExtractorScore), FEATURES, LABELS),
    "LPIPS": (partial(IdentityLPIPS), MAPS, MAPS.flip(0)),
}
"""The concrete metrics: a constructor and one batch `(input, target)` each."""

BASES: dict[str, Case] = {
    "Metric": (partial(Metric, abs_error), FEATURES, FEATURES.flip(0)),
    "FeatureMetric": (partial(FeatureMetric, abs_error), FEATURES, FEATURES.flip(0)),
    "AccumulativeFeatureMetric": (partial(AccumulativeFeatureMetric, abs_error), FEATURES, FEATURES.flip(0)),
    "BinaryConfusionMatrix": (partial(BinaryConfusionMatrix), MAPS, MASKS),  # its `forward_metric` is a subclass's
}
"""The extension bases, built to compute where they can (BinaryConfusionMatrix cannot)."""

ABSTRACT = {"BinaryConfusionMatrix"}
"""Bases that compute nothing until a subclass defines their hook."""


def public_metric_classes() -> dict[str, type[Metric]]:
    """Every `Metric` class in `torchmanager_metrics.__all__`, by its own name (aliases counted once)."""
    found = (getattr(torchmanager_metrics, name) for name in torchmanager_metrics.__all__)
    return {cls.__name__: cls for cls in found if isinstance(cls, type) and issubclass(cls, Metric)}


def build(constructor: partial[Metric], cls: type[Metric] | None = None) -> Metric:
    """`constructor()`, or `cls` (a subclass of the case's class) built with the same arguments."""
    if cls is None:
        return constructor()
    assert issubclass(cls, constructor.func)  # type: ignore[arg-type]
    return cls(*constructor.args, **constructor.keywords)


def subclass_of(constructor: partial[Metric], **methods: Any) -> type[Metric]:
    """A subclass of the case's class that defines `methods`."""
    base = constructor.func
    assert isinstance(base, type)
    return type(f"Sub{base.__name__}", (base,), methods)
