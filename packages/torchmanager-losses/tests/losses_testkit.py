"""One small batch for every public loss class, shared by the tests that must cover them all.

Each case is `(constructor, input, target)`, the constructor a `functools.partial` of the class
so that a test can build a subclass with the same arguments (`build`); `public_loss_classes()`
lists what the package exports, so a test can check that it covers every class.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

import torchmanager_losses
from torchmanager_losses import (
    MAE,
    MSE,
    BCEWithLogits,
    CrossEntropy,
    Dice,
    DiceCE,
    FocalCrossEntropy,
    Identity,
    KLDiv,
    Loss,
    MultiLosses,
    ParallelLoss,
)

Case = tuple["partial[Loss]", Any, Any]

gen = torch.Generator().manual_seed(0)
LOGITS, LABELS = torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)
MAPS, MASKS = torch.randn(2, 3, 4, 4, generator=gen), torch.randint(0, 3, (2, 4, 4), generator=gen)
TARGETS = torch.randn(6, 3, generator=gen)
BINARY = torch.randint(0, 2, (6, 3), generator=gen).float()
NO_GPU: list[int] | None = [] if not torch.cuda.is_available() else None  # DataParallel then calls the module


def _parts() -> list[Loss]:
    return [CrossEntropy(), FocalCrossEntropy(gamma=2, weight=0.5)]


CASES: dict[str, Case] = {
    "BCEWithLogits": (partial(BCEWithLogits), LOGITS, BINARY),
    "CrossEntropy": (partial(CrossEntropy), LOGITS, LABELS),
    "Dice": (partial(Dice), MAPS, MASKS),
    "DiceCE": (partial(DiceCE), MAPS, MASKS),
    "FocalCrossEntropy": (partial(FocalCrossEntropy, gamma=2), LOGITS, LABELS),
    "Identity": (partial(Identity), LOGITS.square().mean().reshape(1), None),
    "KLDiv": (partial(KLDiv, reduction="batchmean"), LOGITS.log_softmax(1), TARGETS.softmax(1)),
    "Loss": (partial(Loss, F.mse_loss), LOGITS, TARGETS),
    "MAE": (partial(MAE), LOGITS, TARGETS),
    "MSE": (partial(MSE), LOGITS, TARGETS),
    "MultiLosses": (partial(MultiLosses, _parts()), LOGITS, LABELS),
    "ParallelLoss": (partial(ParallelLoss, CrossEntropy(weight=2), NO_GPU), LOGITS, LABELS),
}
"""Every loss class: a constructor and one batch `(input, target)` each."""


def public_loss_classes() -> dict[str, type[Loss]]:
    """Every `Loss` class in `torchmanager_losses.__all__`, by its own name (aliases counted once)."""
    found = (getattr(torchmanager_losses, name) for name in torchmanager_losses.__all__)
    return {cls.__name__: cls for cls in found if isinstance(cls, type) and issubclass(cls, Loss)}


def build(constructor: partial[Loss], cls: type[Loss] | None = None) -> Loss:
    """`constructor()`, or `cls` (a subclass of the case's class) built with the same arguments.

    MultiLosses' parts are built afresh each time, so two instances never share a part's state.
    """
    args = tuple(_parts() if isinstance(a, list) else a for a in constructor.args)
    return (cls or constructor.func)(*args, **constructor.keywords)  # type: ignore[operator, no-any-return]


def subclass_of(constructor: partial[Loss], **methods: Any) -> type[Loss]:
    """A subclass of the case's class that defines `methods`."""
    base = constructor.func
    assert isinstance(base, type)
    return type(f"Sub{base.__name__}", (base,), methods)
