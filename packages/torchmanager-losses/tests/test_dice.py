"""Dice and DiceCE against hand computation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import Dice, DiceCE, dice_loss


def segmentation(n: int = 2, c: int = 3, h: int = 4, w: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=gen), torch.randint(0, c, (n, h, w), generator=gen)


def hand_dice(x: torch.Tensor, y: torch.Tensor, smooth: float) -> float:
    """Dice over (N, C, H, W) logits and (N, H, W) labels, one element at a time."""
    n, c, h, w = x.shape
    inter = probs_sum = truth_sum = 0.0
    for i, a, b in itertools.product(range(n), range(h), range(w)):
        exps = [float(x[i, k, a, b].exp()) for k in range(c)]
        for k in range(c):
            p = exps[k] / sum(exps)
            t = 1.0 if int(y[i, a, b]) == k else 0.0
            inter += p * t
            probs_sum += p
            truth_sum += t
    return 1 - (2 * inter + smooth) / (probs_sum + truth_sum + smooth)


def grads(fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    leaf = x.detach().clone().requires_grad_(True)
    fn(leaf, y).backward()
    assert leaf.grad is not None
    return leaf.grad


@pytest.mark.parametrize("smooth", [1e-6, 1.0])
def test_dice_matches_hand_computation(smooth: float) -> None:
    x, y = segmentation()
    assert Dice(smooth=smooth)(x, y).item() == pytest.approx(hand_dice(x, y, smooth), rel=1e-5)


def test_dice_gradient_matches_a_torch_formula_written_out() -> None:
    x, y = segmentation()

    def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p = a.softmax(1)
        t = F.one_hot(b, 3).permute(0, 3, 1, 2).float()
        return 1 - (2 * (p * t).sum() + 1e-6) / (p.sum() + t.sum() + 1e-6)

    torch.testing.assert_close(grads(Dice(), x, y), grads(reference, x, y))


def test_dice_one_hot_encodes_along_the_class_dimension() -> None:
    x, y = segmentation()
    ours = Dice()(x, y).item()
    # upstream flattened the (N, C, H, W) probabilities but one-hot encoded the labels along the
    # last axis, so class scores were compared with the labels of other pixels
    probs = x.softmax(1).reshape(-1)
    upstream_truth = F.one_hot(y.reshape(-1), 3).reshape(-1).float()
    upstream = 1 - (2 * (probs * upstream_truth).sum() + 1e-6) / (probs.sum() + upstream_truth.sum() + 1e-6)
    assert ours == pytest.approx(hand_dice(x, y, 1e-6), rel=1e-5)
    assert abs(upstream.item() - ours) > 1e-3


def test_dice_with_classes_last() -> None:
    x, y = segmentation()
    channels_last = x.permute(0, 2, 3, 1)
    torch.testing.assert_close(Dice(dim=-1)(channels_last, y), Dice()(x, y))
    torch.testing.assert_close(Dice(dim=3)(channels_last, y), Dice()(x, y))


def test_dice_of_a_perfect_prediction_is_near_zero() -> None:
    _, y = segmentation()
    confident = 50 * F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    assert Dice()(confident, y).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_accepts_one_hot_labels_of_the_inputs_shape() -> None:
    x, y = segmentation()
    one_hot = F.one_hot(y, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(Dice()(x, one_hot), Dice()(x, y))


def test_binary_dice_with_a_sigmoid() -> None:
    gen = torch.Generator().manual_seed(1)
    x, mask = torch.randn(2, 1, 3, 3, generator=gen), torch.randint(0, 2, (2, 3, 3), generator=gen)
    p, t = x.sigmoid(), mask.float()
    expected = 1 - (2 * (p.squeeze(1) * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    torch.testing.assert_close(Dice(smooth=1.0, softmax_input=False)(x, mask), expected)
    torch.testing.assert_close(Dice(smooth=1.0, softmax_input=False)(x, mask.unsqueeze(1).float()), expected)


def test_dice_ce_is_the_weighted_sum_of_cross_entropy_and_dice() -> None:
    x, y = segmentation()
    class_weights = torch.tensor([1.0, 2.0, 3.0])
    dice_ce = DiceCE(class_weights, ce_lambda=0.3, dice_lambda=2.0, weight=0.5)
    expected = 0.5 * (0.3 * F.cross_entropy(x, y, class_weights) + 2.0 * hand_dice(x, y, smooth=1.0))
    assert dice_ce(x, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_ce_gradient() -> None:
    x, y = segmentation()

    def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(a, b) + dice_loss(a, b, 1, 1.0)

    torch.testing.assert_close(grads(DiceCE(), x, y), grads(reference, x, y))


def test_dice_refuses_labels_of_the_wrong_shape() -> None:
    x, _ = segmentation()
    with pytest.raises(
        ValueError,
        match=r"Dice labels must be class indices of shape \(2, 4, 5\) \(the input's shape without `dim`\) or a tensor of the input's shape \(2, 3, 4, 5\)\. Received: target shape=\(2, 5, 4\)",
    ):
        Dice()(x, torch.zeros(2, 5, 4, dtype=torch.long))


def test_dice_refuses_float_class_indices() -> None:
    x, _ = segmentation()
    with pytest.raises(
        TypeError, match=r"Dice class indices must be an integer tensor\. Received: target dtype=torch\.float32"
    ):
        Dice()(x, torch.zeros(2, 4, 5))


def test_dice_refuses_a_softmax_over_one_channel() -> None:
    with pytest.raises(ValueError, match=r"A softmax over a single channel is always 1: use `softmax_input=False`"):
        Dice()(torch.zeros(2, 1, 3), torch.zeros(2, 3, dtype=torch.long))


def test_dice_refuses_a_dim_out_of_range() -> None:
    x, y = segmentation()
    with pytest.raises(
        ValueError, match=r"`dim` must index a dimension of the input, of shape \(2, 3, 4, 5\)\. Received: dim=4"
    ):
        Dice(dim=4)(x, y)


def test_dice_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"`dim` must be an int \(the class dimension\)\. Received: dim=1\.0"):
        Dice(dim=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`smooth` must be a finite, non-negative float\. Received: smooth=-1"):
        Dice(smooth=-1)
    with pytest.raises(
        ValueError, match=r"`ce_lambda` must be a finite, non-negative float\. Received: ce_lambda=-0\.1"
    ):
        DiceCE(ce_lambda=-0.1)
