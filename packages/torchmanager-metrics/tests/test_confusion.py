"""The confusion-matrix family against scikit-learn: exact from the summed matrix over any batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, precision_recall_fscore_support, recall_score

from torchmanager_metrics import (
    F1,
    BinaryConfusionMatrix,
    ConfusionMatrix,
    Precision,
    Recall,
    binary_confusion_matrix,
    confusion_matrix,
    f1,
    precision,
    recall,
)

SPLITS = ((0, 2), (2, 3), (3, 17), (17, 20))
METRICS = {"precision": (Precision, 0), "recall": (Recall, 1), "f1": (F1, 2)}


def scores(n: int = 20, c: int = 4, seed: int = 0, spatial: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, *spatial, generator=gen), torch.randint(0, c, (n, *spatial), generator=gen)


def stream(
    m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, splits: tuple[tuple[int, int], ...] = SPLITS
) -> torch.Tensor:
    for lo, hi in splits:
        m(x[lo:hi], y[lo:hi])
    return m.result  # type: ignore[no-any-return]


def test_confusion_matrix_matches_scikit_learn_over_uneven_batches() -> None:
    x, y = scores()
    m = ConfusionMatrix(4)
    result = stream(m, x, y)
    expected = sk_confusion_matrix(y, x.argmax(1), labels=range(4))
    assert result.dtype == torch.int64
    np.testing.assert_array_equal(result.numpy(), expected)
    np.testing.assert_array_equal(m.results.numpy(), expected)  # upstream's name for the matrix
    np.testing.assert_array_equal(confusion_matrix(x, y, 4).numpy(), expected)


def test_confusion_matrix_counts_every_pixel_and_skips_labels_out_of_range() -> None:
    x, y = scores(6, 3, spatial=(5, 4))
    y[0, 0, :] = 255  # an ignore index
    keep = (y != 255).flatten()
    expected = sk_confusion_matrix(y.flatten()[keep], x.argmax(1).flatten()[keep], labels=range(3))
    np.testing.assert_array_equal(stream(ConfusionMatrix(3), x, y, ((0, 1), (1, 6))).numpy(), expected)


def test_confusion_matrix_of_integer_predictions_and_empty_state() -> None:
    x, y = scores()
    m = ConfusionMatrix(4)
    assert torch.equal(m.result, torch.zeros(4, 4, dtype=torch.int64))
    m(x.argmax(1), y)
    np.testing.assert_array_equal(m.result.numpy(), sk_confusion_matrix(y, x.argmax(1), labels=range(4)))


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("average", ["micro", "macro", "weighted"])
def test_averaged_precision_recall_f1_match_scikit_learn(name: str, average: str) -> None:
    cls, index = METRICS[name]
    x, y = scores(seed=3)
    x[:, 3] -= 10  # class 3 is never predicted: its precision is 0/0, taken as 0
    pred = x.argmax(1)
    expected = precision_recall_fscore_support(y, pred, average=average, zero_division=0)[index]
    result = stream(cls(average=average, num_classes=4), x, y)
    assert result.item() == pytest.approx(expected, rel=1e-6)
    functional = {"precision": precision, "recall": recall, "f1": f1}[name]
    assert functional(x, y, average=average, num_classes=4).item() == pytest.approx(expected, rel=1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("class_index", [0, 2])
def test_binary_mode_scores_one_class_against_the_rest(name: str, class_index: int) -> None:
    cls, index = METRICS[name]
    x, y = scores(seed=4)
    pred = x.argmax(1)
    expected = precision_recall_fscore_support(y == class_index, pred == class_index, average="binary", zero_division=0)
    result = stream(cls(class_index=class_index), x, y)
    assert result.item() == pytest.approx(expected[index], rel=1e-6)


def test_macro_leaves_out_classes_absent_from_labels_and_predictions() -> None:
    x, y = scores(c=5, seed=5)
    x[:, 4] -= 10
    y[y == 4] = 0  # class 4 occurs nowhere: scikit-learn's default labels leave it out, so do we
    expected = f1_score(y, x.argmax(1), average="macro")
    assert stream(F1(average="macro", num_classes=5), x, y).item() == pytest.approx(expected, rel=1e-6)


def test_upstream_constructor_one_binary_logit_and_a_segmentation_map() -> None:
    """Upstream 1.5's `Precision(dim, *, class_index, eps, target)` keeps working, on (N, 1, H, W) logits."""
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(7, 1, 3, 5, generator=gen), torch.randint(0, 2, (7, 3, 5), generator=gen)
    m = Precision(1, class_index=1, eps=1e-7, target="mask")
    for lo, hi in ((0, 3), (3, 7)):
        m({"mask": x[lo:hi]}, {"mask": y[lo:hi]})
    expected = precision_recall_fscore_support(y.flatten(), (x[:, 0] > 0).flatten().long(), average="binary")[0]
    assert m.result.item() == pytest.approx(expected, rel=1e-6)


def test_epoch_value_comes_from_the_summed_matrix_not_from_batch_means() -> None:
    y = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0])
    pred = torch.tensor([1, 0, 0, 1, 1, 1, 1, 0])
    m = Recall()
    batch_values = [m(pred[:4], y[:4]), m(pred[4:], y[4:])]
    expected = recall_score(y, pred)
    assert m.result.item() == pytest.approx(expected)
    assert torch.stack(batch_values).mean().item() != pytest.approx(expected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no time limits
@given(cuts=st.lists(st.integers(min_value=1, max_value=39), max_size=8, unique=True))
def test_any_batch_split_gives_the_one_shot_f1(cuts: list[int]) -> None:
    x, y = scores(40, 3, seed=8)
    bounds = [0, *sorted(cuts), 40]
    m = F1(average="weighted", num_classes=3)
    whole = F1(average="weighted", num_classes=3)
    whole(x, y)
    for lo, hi in itertools.pairwise(bounds):
        m(x[lo:hi], y[lo:hi])
    assert torch.equal(m.matrix, whole.matrix)
    assert m.result.item() == pytest.approx(f1_score(y, x.argmax(1), average="weighted"), rel=1e-6)


def test_binary_confusion_matrix_is_the_base_of_custom_ratios() -> None:
    """A subclass defines `forward_metric`; here specificity, the recall of the negatives."""

    class Specificity(BinaryConfusionMatrix):
        def forward_metric(
            self, tp: torch.Tensor, tn: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor
        ) -> torch.Tensor:
            return self.ratio(tn, tn + fp)

    x, y = scores(seed=9)
    m = Specificity(class_index=2)
    stream(m, x, y)
    expected = recall_score(y == 2, x.argmax(1) == 2, pos_label=False)
    assert m.result.item() == pytest.approx(expected, rel=1e-6)
    counts = sk_confusion_matrix(y == 2, x.argmax(1) == 2)
    np.testing.assert_array_equal(m.matrix.numpy(), counts)
    np.testing.assert_array_equal(binary_confusion_matrix(x, y, class_index=2).numpy(), counts)
    with pytest.raises(NotImplementedError, match=r"BinaryConfusionMatrix must define `forward_metric"):
        BinaryConfusionMatrix()(x, y)


def test_result_is_nan_before_any_batch_and_after_reset() -> None:
    x, y = scores()
    m = F1(average="macro", num_classes=4)
    assert torch.isnan(m.result)
    m(x, y)
    m.reset()
    assert torch.isnan(m.result) and torch.equal(m.matrix, torch.zeros(4, 4, dtype=torch.int64))


def test_state_dict_round_trip_and_merge_of_halves() -> None:
    x, y = scores()
    first, second, whole = (Precision(average="macro", num_classes=4) for _ in range(3))
    first(x[:9], y[:9])
    second(x[9:], y[9:])
    whole(x, y)
    restored = Precision(average="macro", num_classes=4)
    restored.load_state_dict(first.state_dict())
    torch.testing.assert_close(restored.result, first.result)
    restored.merge_state(second)
    torch.testing.assert_close(restored.result, whole.result)
    torch.testing.assert_close(restored.matrix, whole.matrix)


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int\. Received: num_classes=0"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int\. Received: num_classes=-2"):
        F1(average="macro", num_classes=-2)
    with pytest.raises(ValueError, match=r"`average` must be one of .*Received: average='samples'"):
        F1(average="samples", num_classes=3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"`num_classes` is required when `average` is 'macro'.*Received: num_classes=None"
    ):
        Recall(average="macro")
    with pytest.raises(ValueError, match=r"`class_index` must be less than `num_classes`=3\. Received: class_index=3"):
        Precision(class_index=3, num_classes=3)
    with pytest.raises(ValueError, match=r"`eps` must be a positive float\. Received: eps=0"):
        Precision(eps=0)


def test_bad_inputs_name_the_value() -> None:
    x, y = scores()
    with pytest.raises(ValueError, match=r"`num_classes`=3 scores on dim 1.*Received: input.shape=\(20, 4\)"):
        ConfusionMatrix(3)(x, y)
    with pytest.raises(TypeError, match=r"Received: target.dtype=torch.float32"):
        F1(average="micro", num_classes=4)(x, y.float())
    with pytest.raises(
        ValueError, match=r"Received: input.shape=\(20, 4\), input.dtype=torch.float32, target.shape=\(19,\)"
    ):
        Recall()(x, y[:19])
