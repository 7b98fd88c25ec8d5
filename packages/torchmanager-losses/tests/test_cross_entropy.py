"""The cross-entropy family against torch.nn.functional and hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import BCEWithLogits, CrossEntropy, FocalCrossEntropy, focal_loss


def data(shape: tuple[int, ...], c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n, *rest = shape
    return torch.randn(n, c, *rest, generator=gen), torch.randint(0, c, shape, generator=gen)


def grads(fn, x: torch.Tensor, *args: object) -> torch.Tensor:  # type: ignore[no-untyped-def]
    leaf = x.detach().clone().requires_grad_(True)
    fn(leaf, *args).backward()
    assert leaf.grad is not None
    return leaf.grad


def hand_focal(
    x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float, ignore: int | None = None
) -> tuple[float, int]:
    """Sum of `-alpha (1 - p) ** gamma log p` over (N, C) rows, and the number of rows counted."""
    total, kept = 0.0, 0
    for row, label in zip(x.tolist(), y.tolist()):
        if label == ignore:
            continue
        p = math.exp(row[label]) / sum(math.exp(v) for v in row)
        total += -alpha * (1 - p) ** gamma * math.log(p)
        kept += 1
    return total, kept


@pytest.mark.parametrize("shape", [(6,), (2, 3, 5)])
def test_cross_entropy_matches_torch_value_and_gradient(shape: tuple[int, ...]) -> None:
    x, y = data(shape)
    ce = CrossEntropy()
    torch.testing.assert_close(ce(x, y), F.cross_entropy(x, y))
    torch.testing.assert_close(grads(ce, x, y), grads(F.cross_entropy, x, y))


def test_cross_entropy_takes_torchs_arguments() -> None:
    x, y = data((8,))
    y[0] = -100
    class_weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    ce = CrossEntropy(class_weights, ignore_index=-100, label_smoothing=0.1, reduction="sum", weight=0.5)
    expected = 0.5 * F.cross_entropy(x, y, class_weights, ignore_index=-100, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(ce(x, y), expected)


def test_cross_entropy_casts_integer_labels_of_any_dtype() -> None:
    x, y = data((5,))
    torch.testing.assert_close(CrossEntropy()(x, y.to(torch.uint8)), F.cross_entropy(x, y))
    torch.testing.assert_close(CrossEntropy()(x, y.int()), F.cross_entropy(x, y))


def test_cross_entropy_accepts_probability_labels() -> None:
    x, _ = data((5,))
    probs = torch.randn(5, 4).softmax(1)
    torch.testing.assert_close(CrossEntropy()(x, probs), -(probs * x.log_softmax(1)).sum(1).mean())


def test_cross_entropy_refuses_probabilities_of_the_wrong_shape() -> None:
    x, _ = data((5,))
    with pytest.raises(
        ValueError,
        match=r"Floating cross-entropy labels are class probabilities and must have the logits' shape .*Received: target dtype=torch\.float32, shape=\(5,\), input shape=\(5, 4\)",
    ):
        CrossEntropy()(x, torch.zeros(5))


def test_cross_entropy_refuses_bool_labels() -> None:
    x, _ = data((2,))
    with pytest.raises(
        TypeError,
        match=r"Cross-entropy labels must be a tensor of integer class indices or of float class probabilities\. Received: target dtype=torch\.bool",
    ):
        CrossEntropy()(x, torch.tensor([True, False]))


def test_cross_entropy_refuses_a_non_tensor_label() -> None:
    x, _ = data((2,))
    with pytest.raises(TypeError, match=r"Received: target type=list"):
        CrossEntropy()(x, [0, 1])


def test_bce_with_logits_matches_torch_and_casts_labels() -> None:
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 2, generator=gen), torch.randint(0, 2, (6, 2), generator=gen)
    pos_weight = torch.tensor([2.0, 0.5])
    bce = BCEWithLogits(pos_weight=pos_weight)
    expected = F.binary_cross_entropy_with_logits(x, y.float(), pos_weight=pos_weight)
    torch.testing.assert_close(bce(x, y), expected)
    torch.testing.assert_close(bce(x, y.bool()), expected)
    torch.testing.assert_close(
        grads(bce, x, y),
        grads(lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=pos_weight), x, y.float()),
    )


@pytest.mark.parametrize(("alpha", "gamma"), [(1.0, 0.0), (0.25, 2.0), (0.5, 1.0)])
def test_focal_loss_matches_hand_computation(alpha: float, gamma: float) -> None:
    x, y = data((7,))
    total, kept = hand_focal(x, y, alpha, gamma)
    assert FocalCrossEntropy(alpha, gamma)(x, y).item() == pytest.approx(total / kept, rel=1e-5)
    assert FocalCrossEntropy(alpha, gamma, calculate_average=False)(x, y).item() == pytest.approx(total, rel=1e-5)


def test_focal_loss_with_gamma_zero_is_scaled_cross_entropy() -> None:
    x, y = data((3, 4))
    torch.testing.assert_close(FocalCrossEntropy(0.5, 0)(x, y), 0.5 * F.cross_entropy(x, y))


def test_focal_loss_gradient_matches_a_hand_written_torch_formula() -> None:
    x, y = data((6,))

    def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        log_p = a.log_softmax(1).gather(1, b[:, None]).squeeze(1)
        return (-0.25 * (1 - log_p.exp()) ** 2 * log_p).mean()

    focal = FocalCrossEntropy(alpha=0.25, gamma=2)
    torch.testing.assert_close(focal(x, y), reference(x, y))
    torch.testing.assert_close(grads(focal, x, y), grads(reference, x, y))


def test_focal_loss_averages_over_non_ignored_elements() -> None:
    x, y = data((8,))
    y[[1, 4]] = 255
    total, kept = hand_focal(x, y, 1.0, 2.0, ignore=255)
    assert kept == 6
    # upstream divided by all 8 elements, ignored ones included, shrinking the loss by 6/8
    assert FocalCrossEntropy(gamma=2)(x, y).item() == pytest.approx(total / 6, rel=1e-5)
    assert focal_loss(x, y, 1.0, 2.0, calculate_average=False).item() == pytest.approx(total, rel=1e-5)


def test_focal_loss_with_every_element_ignored_is_zero() -> None:
    x, _ = data((3,))
    assert FocalCrossEntropy()(x, torch.full((3,), 255)).item() == 0.0


def test_focal_loss_accepts_probability_labels() -> None:
    x, y = data((5,))
    one_hot = F.one_hot(y, 4).float()
    torch.testing.assert_close(FocalCrossEntropy(0.5, 2)(x, one_hot), FocalCrossEntropy(0.5, 2)(x, y))


@pytest.mark.parametrize("name", ["alpha", "gamma"])
def test_focal_loss_refuses_negative_parameters(name: str) -> None:
    with pytest.raises(ValueError, match=rf"`{name}` must be a finite, non-negative float\. Received: {name}=-1"):
        FocalCrossEntropy(**{name: -1})
