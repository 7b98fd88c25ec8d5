"""The accuracy family against scikit-learn, over uneven batches, with its input checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from torchmanager_metrics import (
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    TopKAccuracy,
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    predicted_classes,
    sparse_categorical_accuracy,
    top_k_accuracy,
)

SPLITS = ((0, 1), (1, 8), (8, 13))


def logits(n: int = 13, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)


def stream(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for lo, hi in SPLITS:
        m(x[lo:hi], y[lo:hi])
    return m.result  # type: ignore[no-any-return]


def test_accuracy_of_predictions_matches_scikit_learn_over_uneven_batches() -> None:
    x, y = logits()
    pred = x.argmax(1)
    assert stream(Accuracy(), pred, y).item() == pytest.approx(accuracy_score(y, pred))
    assert accuracy(pred, y).item() == pytest.approx(accuracy_score(y, pred))


def test_sparse_categorical_accuracy_works_with_its_default_dim() -> None:
    """`SparseCategoricalAccuracy()` with its default `dim=-1` scores (batch, classes) logits.

    Upstream 1.5 rejects this default: its `dim` setter asserts `dim >= 0` and its `forward`
    reads `self._dim`, which it never sets.
    """
    x, y = logits()
    m = SparseCategoricalAccuracy()
    assert m.dim == -1
    assert stream(m, x, y).item() == pytest.approx(accuracy_score(y, x.argmax(1)))
    assert sparse_categorical_accuracy(x, y).item() == pytest.approx(accuracy_score(y, x.argmax(1)))


def test_sparse_categorical_accuracy_on_segmentation_maps_with_dim_1() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(13, 3, 4, 6, generator=gen), torch.randint(0, 3, (13, 4, 6), generator=gen)
    expected = accuracy_score(y.flatten(), x.argmax(1).flatten())
    assert stream(SparseCategoricalAccuracy(dim=1), x, y).item() == pytest.approx(expected)


def test_one_binary_logit_is_positive_above_zero() -> None:
    x = torch.tensor([[0.3], [-1.0], [2.0], [-0.1]])
    y = torch.tensor([1, 1, 0, 0])
    assert SparseCategoricalAccuracy()(x, y).item() == pytest.approx(accuracy_score(y, (x[:, 0] > 0).long()))


def test_categorical_accuracy_compares_argmaxes_with_one_hot_labels() -> None:
    x, y = logits()
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    expected = accuracy_score(y, x.argmax(1))
    assert stream(CategoricalAccuracy(), x, one_hot).item() == pytest.approx(expected)
    assert categorical_accuracy(x, one_hot).item() == pytest.approx(expected)


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_accuracy_thresholds_probabilities_or_logits(from_logits: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(13, generator=gen), torch.randint(0, 2, (13,), generator=gen)
    probabilities = x.sigmoid() if from_logits else x
    expected = accuracy_score(y, (probabilities > 0.3).long())
    assert stream(BinaryAccuracy(0.3, from_logits=from_logits), x, y).item() == pytest.approx(expected)
    assert binary_accuracy(x, y, 0.3, from_logits).item() == pytest.approx(expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_matches_scikit_learn(k: int) -> None:
    x, y = logits(c=5)
    expected = top_k_accuracy_score(y, x, k=k, labels=list(range(5)))
    assert stream(TopKAccuracy(k), x, y).item() == pytest.approx(expected)
    assert top_k_accuracy(x, y, k).item() == pytest.approx(expected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no time limits
@given(cuts=st.lists(st.integers(min_value=1, max_value=29), max_size=6, unique=True))
def test_any_batch_split_gives_the_one_shot_value(cuts: list[int]) -> None:
    x, y = logits(30, 3, seed=7)
    bounds = [0, *sorted(cuts), 30]
    m = SparseCategoricalAccuracy()
    for lo, hi in itertools.pairwise(bounds):
        m(x[lo:hi], y[lo:hi])
    assert m.result.item() == pytest.approx(accuracy_score(y, x.argmax(1)))


def test_target_key_picks_entries_of_dicts() -> None:
    x, y = logits()
    m = SparseCategoricalAccuracy(target="cls")
    m({"cls": x, "box": torch.zeros(13, 4)}, {"cls": y})
    assert m.result.item() == pytest.approx(accuracy_score(y, x.argmax(1)))


def test_predicted_classes_takes_argmax_logit_sign_or_integer_predictions() -> None:
    x, y = logits()
    assert torch.equal(predicted_classes(x, y), x.argmax(1))
    assert torch.equal(predicted_classes(x.argmax(1), y), x.argmax(1))
    assert torch.equal(predicted_classes(x[:, :1], y), (x[:, 0] > 0).long())
    with pytest.raises(ValueError, match=r"`num_classes`=3 scores on dim -1.*Received: input.shape=\(13, 4\)"):
        predicted_classes(x, y, num_classes=3)


def test_float_labels_to_a_sparse_accuracy_name_the_dtype() -> None:
    x, y = logits()
    with pytest.raises(TypeError, match=r"integer class indices.*Received: target.dtype=torch.float32"):
        SparseCategoricalAccuracy()(x, y.float())


def test_wrong_shapes_name_both_shapes() -> None:
    x, y = logits()
    with pytest.raises(
        ValueError, match=r"Received: input.shape=\(13, 4\), input.dtype=torch.float32, target.shape=\(12,\)"
    ):
        SparseCategoricalAccuracy()(x, y[:12])
    with pytest.raises(ValueError, match=r"Received: input.shape=\(13,\), target.shape=\(12,\)"):
        Accuracy()(y, y[:12])
    with pytest.raises(ValueError, match=r"Received: input.shape=\(13, 4\), target.shape=\(13, 3\)"):
        CategoricalAccuracy()(x, x[:, :3])


def test_bad_constructor_arguments_name_the_value() -> None:
    with pytest.raises(TypeError, match=r"`dim` must be an int\. Received: dim=1\.5"):
        SparseCategoricalAccuracy(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`k` must be a positive int\. Received: k=0"):
        TopKAccuracy(0)
    with pytest.raises(ValueError, match=r"`k` must be a positive int\. Received: k=-1"):
        top_k_accuracy(*logits(), -1)
    with pytest.raises(ValueError, match=r"`threshold` must be a probability in \[0, 1\]\. Received: threshold=2"):
        BinaryAccuracy(2)


def test_bad_dim_or_k_at_call_time_name_the_value() -> None:
    x, y = logits()
    with pytest.raises(ValueError, match=r"`dim` must be in \[-2, 2\) for an input of 2 dims\. Received: dim=2"):
        SparseCategoricalAccuracy(2)(x, y)
    with pytest.raises(ValueError, match=r"`k` must be at most the number of classes \(4\)\. Received: k=5"):
        TopKAccuracy(5)(x, y)


def test_state_dict_round_trip_and_merge_of_halves() -> None:
    x, y = logits()
    first, second = TopKAccuracy(2), TopKAccuracy(2)
    first(x[:5], y[:5])
    second(x[5:], y[5:])
    restored = TopKAccuracy(2)
    restored.load_state_dict(first.state_dict())
    restored.merge_state(second)
    expected = top_k_accuracy_score(y, x, k=2, labels=list(range(4)))
    assert restored.result.item() == pytest.approx(expected)
    assert np.isclose(first.result.item(), top_k_accuracy_score(y[:5], x[:5], k=2, labels=list(range(4))))
