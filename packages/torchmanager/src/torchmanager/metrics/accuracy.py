"""Upstream torchmanager 1.5's module path `torchmanager.metrics.accuracy`."""

from torchmanager_metrics import (
    F1,
    HD95,
    MAE,
    Accuracy,
    CategoricalAccuracy,
    Dice,
    PartialDice,
    Precision,
    Recall,
    SparseCategoricalAccuracy,
)

__all__ = [
    "F1",
    "HD95",
    "MAE",
    "Accuracy",
    "CategoricalAccuracy",
    "Dice",
    "PartialDice",
    "Precision",
    "Recall",
    "SparseCategoricalAccuracy",
]
