"""Upstream torchmanager 1.5's module path `torchmanager.metrics.accuracy`, with the accuracy family's functions."""

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
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    sparse_categorical_accuracy,
    top_k_accuracy,
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
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
    "top_k_accuracy",
]
