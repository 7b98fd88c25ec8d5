"""The overlap family against scikit-learn, scipy and hand computation, over uneven batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metrics_references import reference_dice, reference_hd
from scipy.ndimage import distance_transform_edt
from scipy.spatial.distance import directed_hausdorff
from sklearn.metrics import f1_score, jaccard_score

from torchmanager_metrics import (
    HD95,
    Dice,
    InstanceIoU,
    MeanIoU,
    PartialDice,
    dice,
    hd95,
    instance_iou,
    mean_iou,
    partial_dice,
)
from torchmanager_metrics import overlap as overlap_module

SPLITS = ((0, 1), (1, 5), (5, 9))


def maps(n: int = 9, c: int = 3, hw: tuple[int, ...] = (6, 7), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, *hw, generator=gen), torch.randint(0, c, (n, *hw), generator=gen)


def stream(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for lo, hi in SPLITS:
        m(x[lo:hi], y[lo:hi])
    return m.result  # type: ignore[no-any-return]


# ---------------------------------------------------------------- IoU


def test_mean_iou_is_the_micro_jaccard_of_every_pixel() -> None:
    x, y = maps()
    expected = jaccard_score(y.flatten(), x.argmax(1).flatten(), average="micro")
    assert stream(MeanIoU(smooth=0), x, y).item() == pytest.approx(expected, rel=1e-6)
    assert mean_iou(x, y, smooth=0).item() == pytest.approx(expected, rel=1e-6)


def test_mean_iou_with_one_logit_is_the_foreground_iou_and_smooth_is_added() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 1, 5, 5, generator=gen), torch.randint(0, 2, (9, 1, 5, 5), generator=gen)
    pred, true = (x > 0).flatten().numpy(), y.flatten().numpy()
    intersection, union = np.sum(pred & (true == 1)), np.sum(pred | (true == 1))
    expected = (intersection + 1e-4) / (union + 1e-4)
    assert stream(MeanIoU(), x, y).item() == pytest.approx(expected, rel=1e-6)  # labels shaped as the logits (upstream)
    assert MeanIoU(smooth=0)(x, y[:, 0]).item() == pytest.approx(jaccard_score(true, pred), rel=1e-6)


def test_mean_iou_threshold_quantises_the_epoch_iou_as_upstream() -> None:
    x, y = maps(seed=2)
    iou = jaccard_score(y.flatten(), x.argmax(1).flatten(), average="micro")
    expected = min(max(math.ceil(10 / (1 - 0.2) * (iou - 0.2)), 0), 10) / 10
    assert stream(MeanIoU(smooth=0, threshold=0.2), x, y).item() == pytest.approx(expected)


def test_instance_iou_is_the_mean_iou_of_the_classes_present() -> None:
    x, y = maps(c=4, seed=3)
    x[:, 3] -= 10
    y[y == 3] = 0  # class 3 is absent from both: left out of the mean
    expected = jaccard_score(y.flatten(), x.argmax(1).flatten(), average="macro")
    m = InstanceIoU(4)
    assert stream(m, x, y).item() == pytest.approx(expected, rel=1e-6)
    assert instance_iou(x, y, 4).item() == pytest.approx(expected, rel=1e-6)
    assert m.matrix.sum().item() == y.numel()


# ---------------------------------------------------------------- Dice


def test_dice_is_the_per_sample_class_mean_averaged_over_samples() -> None:
    x, y = maps(c=4, seed=4)
    y[:4][y[:4] == 3] = 0  # some samples lack class 3 in their label
    expected = reference_dice(x, y, 4)
    assert stream(Dice(4), x, y).item() == pytest.approx(expected, abs=1e-6)
    assert dice(x, y, 4).mean().item() == pytest.approx(expected, abs=1e-6)


def test_a_class_absent_from_prediction_and_label_scores_one() -> None:
    y = torch.zeros(1, 4, dtype=torch.long)
    assert dice(y, y, 3).item() == pytest.approx(1.0)


def test_partial_dice_pools_one_class_over_every_batch() -> None:
    x, y = maps(seed=5)
    expected = f1_score(y.flatten() == 2, x.argmax(1).flatten() == 2)
    m = PartialDice(2)
    assert stream(m, x, y).item() == pytest.approx(expected, rel=1e-6)
    assert partial_dice(x, y, 2).item() == pytest.approx(expected, rel=1e-6)
    assert torch.isnan(PartialDice(2).result)


# ---------------------------------------------------------------- HD95


def sparse_masks(n: int, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen) > 0.8, torch.rand(n, *shape, generator=gen) > 0.85


def test_hd95_matches_scipy_distances_and_numpy_percentile_per_sample() -> None:
    pred, true = sparse_masks(9, (12, 10), seed=6)
    expected = [reference_hd(p.numpy(), t.numpy()) for p, t in zip(pred, true)]
    np.testing.assert_allclose(hd95(pred, true).numpy(), expected, rtol=1e-5)
    assert stream(HD95(), pred, true).item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_hd100_is_scipys_symmetric_hausdorff_distance() -> None:
    pred, true = sparse_masks(4, (9, 11), seed=7)
    for p, t, value in zip(pred, true, hd95(pred, true, percentile=100)):
        a, b = np.argwhere(p.numpy()), np.argwhere(t.numpy())
        expected = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
        assert value.item() == pytest.approx(expected, rel=1e-6)


def test_hd95_on_volumes_and_on_scores_with_a_foreground_class() -> None:
    pred, true = sparse_masks(3, (5, 6, 4), seed=8)
    expected = [reference_hd(p.numpy(), t.numpy()) for p, t in zip(pred, true)]
    np.testing.assert_allclose(hd95(pred.long(), true.long()).numpy(), expected, rtol=1e-5)
    x, y = maps(n=5, c=3, seed=9)
    expected = np.mean([reference_hd(p.numpy() == 2, t.numpy() == 2) for p, t in zip(x.argmax(1), y)])
    assert HD95(class_index=2)(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_hd95_of_empty_masks_is_zero_and_of_one_empty_mask_infinite() -> None:
    empty, full = torch.zeros(1, 4, 4, dtype=torch.bool), torch.ones(1, 4, 4, dtype=torch.bool)
    assert hd95(empty, empty).item() == 0.0
    assert hd95(full, empty).item() == math.inf and hd95(empty, full).item() == math.inf


def test_the_distance_transform_matches_scipy_also_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    mask, _ = sparse_masks(2, (13, 9), seed=10)
    expected = np.stack([distance_transform_edt(~m.numpy()) ** 2 for m in mask])
    np.testing.assert_allclose(overlap_module.squared_distance_transform(mask).numpy(), expected, rtol=1e-6)
    monkeypatch.setattr(overlap_module, "_CHUNK", 100)  # a few rows per step
    np.testing.assert_allclose(overlap_module.squared_distance_transform(mask).numpy(), expected, rtol=1e-6)


# ---------------------------------------------------------------- shared contract


@pytest.mark.parametrize(
    "make",
    [lambda: MeanIoU(), lambda: InstanceIoU(3), lambda: Dice(3), lambda: PartialDice(1), lambda: HD95(class_index=1)],
)
def test_state_dict_round_trip_and_merge_of_halves(make: object) -> None:
    x, y = maps(seed=11)
    first, second, whole = make(), make(), make()  # type: ignore[operator]
    first(x[:4], y[:4])
    second(x[4:], y[4:])
    whole(x, y)
    restored = make()  # type: ignore[operator]
    restored.load_state_dict(first.state_dict())
    torch.testing.assert_close(restored.result, first.result)
    restored.merge_state(second)
    torch.testing.assert_close(restored.result, whole.result)


def test_target_key_picks_entries_of_dicts() -> None:
    x, y = maps(seed=12)
    m = Dice(3, target="seg")
    m({"seg": x}, {"seg": y})
    assert m.result.item() == pytest.approx(reference_dice(x, y, 3), abs=1e-6)


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int\. Received: num_classes=0"):
        Dice(0)
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int\. Received: num_classes=-1"):
        InstanceIoU(-1)
    with pytest.raises(ValueError, match=r"`threshold` must be in \[0, 1\)\. Received: threshold=1"):
        MeanIoU(threshold=1)
    with pytest.raises(ValueError, match=r"`c` must be a non-negative class index\. Received: c=-1"):
        PartialDice(-1)
    with pytest.raises(ValueError, match=r"`percentile` must be in \[0, 100\]\. Received: percentile=101"):
        HD95(percentile=101)
    with pytest.raises(ValueError, match=r"`eps` must be a non-negative float\. Received: eps=-1"):
        Dice(3, eps=-1)


def test_bad_inputs_name_the_value() -> None:
    x, y = maps()
    with pytest.raises(ValueError, match=r"`num_classes`=4 scores on dim 1.*Received: input.shape=\(9, 3, 6, 7\)"):
        Dice(4)(x, y)
    with pytest.raises(TypeError, match=r"Received: target.dtype=torch.float32"):
        HD95()(x, y.float())
    with pytest.raises(
        ValueError, match=r"Received: input.shape=\(9, 3, 6, 7\), input.dtype=torch.float32, target.shape=\(9, 6\)"
    ):
        MeanIoU()(x, y[:, :, 0])
    with pytest.raises(ValueError, match=r"`target` must have a batch dimension\. Received: target.shape=\(\)"):
        PartialDice(1)(torch.tensor(1), torch.tensor(1))
