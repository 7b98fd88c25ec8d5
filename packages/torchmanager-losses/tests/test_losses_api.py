"""The public API: every upstream name is exported, upstream signatures still construct."""

from __future__ import annotations

import torch

import torchmanager_losses
from torchmanager_losses import CrossEntropy, Dice, DiceCE, FocalCrossEntropy, KLDiv, Reduction

# torchmanager 1.5's `torchmanager.losses.__all__`, copied by hand
UPSTREAM_NAMES = [
    "CrossEntropy",
    "FocalCrossEntropy",
    "KLDiv",
    "Dice",
    "BaseLoss",
    "Loss",
    "MultiLosses",
    "ParallelLoss",
    "loss",
    "loss_fn",
    "Identity",
    "MAE",
    "MSE",
]


def test_every_upstream_name_is_exported() -> None:
    missing = [name for name in UPSTREAM_NAMES if name not in torchmanager_losses.__all__]
    assert missing == []
    for name in torchmanager_losses.__all__:
        assert hasattr(torchmanager_losses, name), name


def test_dice_ce_and_reduction_are_exported_too() -> None:
    # upstream defined DiceCE but forgot it in `__all__`; Reduction lived in torchmanager_core
    assert {"DiceCE", "Reduction"} <= set(torchmanager_losses.__all__)


def test_all_is_sorted() -> None:
    assert torchmanager_losses.__all__ == sorted(torchmanager_losses.__all__)


def test_upstream_signatures_construct() -> None:
    focal = FocalCrossEntropy(0.25, 2.0, False, 0, target="out", weight=0.5)
    assert (focal.alpha, focal.gamma, focal.calculate_average, focal.ignore_index) == (0.25, 2.0, False, 0)
    assert (focal.target, focal.weight) == ("out", 0.5)
    dice = Dice(2, 1e-3, softmax_input=False, weight=2)
    assert (dice.dim, dice.smooth, dice.softmax_input, dice.weight) == (2, 1e-3, False, 2.0)
    ce = CrossEntropy(torch.tensor([1.0, 2.0]), ignore_index=-1, label_smoothing=0.1, weight=3)
    assert ce.weight == 3.0
    dice_ce = DiceCE(ce_lambda=0.5, dice_lambda=2, smooth=1, target="seg")
    assert (dice_ce.ce_lambda, dice_ce.dice_lambda, dice_ce.smooth, dice_ce.target) == (0.5, 2.0, 1.0, "seg")
    kl = KLDiv(reduction="batchmean", log_target=True, replace_nan=True, softmax_temperature=4, weight=0.1)
    assert (kl.reduction, kl.log_target, kl.replace_nan, kl.softmax_temperature) == ("batchmean", True, True, 4.0)


def test_reduction_values_are_torch_strings() -> None:
    assert [member.value for member in Reduction] == ["none", "mean", "sum"]


def test_importing_pulls_in_no_optional_dependency() -> None:
    import subprocess
    import sys

    code = "import sys, torchmanager_losses; print(sorted(m for m in ('scipy', 'yaml', 'tensorboard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
