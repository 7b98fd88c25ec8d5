"""MSE, MAE and reductions against torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import MAE, MSE, Reduction
from torchmanager_losses.reduction import to_reduction

gen = torch.Generator().manual_seed(0)
X, Y = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)


@pytest.mark.parametrize(("cls", "fn"), [(MSE, F.mse_loss), (MAE, F.l1_loss)])
def test_value_and_gradient_match_torch(cls: type, fn) -> None:  # type: ignore[no-untyped-def]
    a, b = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    value = cls()(a, Y)
    value.backward()
    fn(b, Y).backward()
    torch.testing.assert_close(value, fn(X, Y))
    torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(cls(reduction=Reduction.SUM)(X, Y), fn(X, Y, reduction="sum"))
    torch.testing.assert_close(cls(reduction="sum")(X, Y), fn(X, Y, reduction="sum"))


def test_unreduced_forward_is_elementwise_but_a_call_must_be_scalar() -> None:
    mse = MSE(reduction=Reduction.NONE)
    torch.testing.assert_close(mse.forward(X, Y), (X - Y) ** 2)
    with pytest.raises(ValueError, match=r"MSE must reduce to a scalar loss"):
        mse(X, Y)


def test_replace_nan() -> None:
    x = X.clone()
    x[0, 0] = float("nan")
    assert torch.isnan(MAE()(x, Y))
    expected = (x - Y).abs().nan_to_num(0.0).mean()
    torch.testing.assert_close(MAE(replace_nan=True)(x, Y), expected)


def test_shapes_must_match() -> None:
    # torch would broadcast (6, 1) against (6,) into (6, 6) and only warn
    with pytest.raises(
        ValueError,
        match=r"MSE compares `input` and `target` element by element: they must have the same shape\. Received: input shape=\(6, 1\), target shape=\(6,\)",
    ):
        MSE()(X[:, :1], Y[:, 0])


def test_unknown_reduction() -> None:
    with pytest.raises(
        ValueError,
        match=r"`reduction` must be a Reduction or one of \['none', 'mean', 'sum'\]\. Received: reduction='avg'",
    ):
        MSE(reduction="avg")
    assert to_reduction("mean") is Reduction.MEAN
