"""The public API: upstream's names, a sorted `__all__`, and an import that leaves scipy alone."""

from __future__ import annotations

import subprocess
import sys

import torchmanager_metrics

UPSTREAM_NAMES = [  # torchmanager 1.5's `torchmanager.metrics.__all__`, less LPIPS (not carried over)
    "Accuracy", "CategoricalAccuracy", "Dice", "F1", "HD95", "MAE", "PartialDice", "Precision", "Recall",
    "SparseCategoricalAccuracy", "BinaryConfusionMatrix", "ConfusionMatrix", "AccumulativeFeatureMetric",
    "ExtractorScore", "FeatureMetric", "FID", "KID", "InstanceIoU", "MeanIoU", "BaseMetric", "Metric",
    "metric", "metric_fn", "CosineSimilarity", "PSNR", "SSIM", "MS_SSIM",
]  # fmt: skip


def test_all_is_sorted_and_every_name_exists() -> None:
    names = torchmanager_metrics.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert [n for n in names if not hasattr(torchmanager_metrics, n)] == []


def test_every_upstream_name_is_exported() -> None:
    assert sorted(set(UPSTREAM_NAMES) - set(torchmanager_metrics.__all__)) == []


def test_every_functional_form_is_exported() -> None:
    functions = {"accuracy", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy", "top_k_accuracy"}
    functions |= {"confusion_matrix", "binary_confusion_matrix", "precision", "recall", "f1"}
    functions |= {"mean_iou", "instance_iou", "dice", "partial_dice", "hd95"}
    functions |= {"mae", "mse", "cosine_similarity", "psnr", "ssim", "ms_ssim", "fid", "kid", "inception_score"}
    assert sorted(functions - set(torchmanager_metrics.__all__)) == []


def test_importing_the_package_does_not_import_scipy() -> None:
    code = "import sys, torchmanager_metrics; assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
