"""Similarity metrics against torch.nn.functional, hand computation and a scipy SSIM reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from metrics_references import reference_ms_ssim, reference_ssim_and_cs

from torchmanager_metrics import (
    MAE,
    MS_SSIM,
    MSE,
    PSNR,
    SSIM,
    CosineSimilarity,
    cosine_similarity,
    mae,
    ms_ssim,
    mse,
    psnr,
    ssim,
)

SPLITS = ((0, 1), (1, 4), (4, 7))


def images(n: int = 7, c: int = 2, hw: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, hw, hw, generator=gen)
    return x, (x + 0.1 * torch.randn(n, c, hw, hw, generator=gen)).clamp(0, 1)


def stream(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for lo, hi in SPLITS:
        m(x[lo:hi], y[lo:hi])
    return m.result  # type: ignore[no-any-return]


def test_mae_and_mse_match_torch_functional_over_uneven_batches() -> None:
    x, y = images()
    torch.testing.assert_close(stream(MAE(), x, y), F.l1_loss(x, y))
    torch.testing.assert_close(stream(MSE(), x, y), F.mse_loss(x, y))
    torch.testing.assert_close(mae(x, y), F.l1_loss(x, y))
    torch.testing.assert_close(mse(x, y), F.mse_loss(x, y))


def test_cosine_similarity_matches_torch_functional() -> None:
    x, y = images()
    expected = F.cosine_similarity(x, y, dim=1).mean()  # per pixel, then over pixels and samples
    torch.testing.assert_close(stream(CosineSimilarity(), x, y), expected)
    torch.testing.assert_close(cosine_similarity(x, y), F.cosine_similarity(x, y, dim=1).flatten(1).mean(1))


def test_psnr_is_per_image_then_averaged() -> None:
    x, y = images()
    per_image = [10 * math.log10(1 / F.mse_loss(a, b).item()) for a, b in zip(x, y)]
    assert stream(PSNR(), x, y).item() == pytest.approx(np.mean(per_image), rel=1e-5)
    peaks = [10 * math.log10(a.max().item() ** 2 / F.mse_loss(a, b).item()) for a, b in zip(x, y)]
    np.testing.assert_allclose(psnr(x, y, max_value=None).numpy(), peaks, rtol=1e-5)


def test_denormalize_fn_is_applied_to_both_sides() -> None:
    x, y = images()
    m = PSNR(denormalize_fn=lambda t: t * 255, max_value=255)
    torch.testing.assert_close(stream(m, x, y), psnr(x, y).mean(), rtol=1e-5, atol=1e-5)


def test_ssim_matches_a_scipy_reference_and_is_one_for_equal_images() -> None:
    x, y = images(hw=20)
    xd, yd = x.double().numpy(), y.double().numpy()
    per_image = [np.mean([reference_ssim_and_cs(a[c], b[c])[0] for c in range(2)]) for a, b in zip(xd, yd)]
    assert stream(SSIM(2, pixel_range=1), x, y).item() == pytest.approx(np.mean(per_image), rel=1e-4)
    np.testing.assert_allclose(ssim(x, y, pixel_range=1).numpy(), per_image, rtol=1e-4)
    torch.testing.assert_close(ssim(x, x, pixel_range=1), torch.ones(7))


def test_ms_ssim_matches_a_scipy_reference() -> None:
    x, y = images(n=3, c=1, hw=24, seed=1)
    weights = (0.3, 0.7)
    expected = [reference_ms_ssim(a, b, weights) for a, b in zip(x[:, 0].double().numpy(), y[:, 0].double().numpy())]
    np.testing.assert_allclose(ms_ssim(x, y, pixel_range=1, weights=weights).numpy(), expected, rtol=1e-4)
    m = MS_SSIM(1, pixel_range=1, weights=list(weights))
    assert m.scales == 2
    assert stream(m, x, y).item() == pytest.approx(np.mean(expected), rel=1e-4)


def test_state_dict_round_trip_and_merge_of_halves() -> None:
    x, y = images()
    first, second, whole = SSIM(2), SSIM(2), SSIM(2)
    first(x[:2], y[:2])
    second(x[2:], y[2:])
    whole(x, y)
    restored = SSIM(2)
    restored.load_state_dict(first.state_dict())
    restored.merge_state(second)
    torch.testing.assert_close(restored.result, whole.result)


def test_bad_arguments_and_inputs_name_the_value() -> None:
    x, y = images()
    with pytest.raises(ValueError, match=r"`channels` must be a positive int\. Received: channels=0"):
        SSIM(0)
    with pytest.raises(ValueError, match=r"`pixel_range` must be a positive number\. Received: pixel_range=0"):
        SSIM(2, pixel_range=0)
    with pytest.raises(ValueError, match=r"`window_size` must be a positive int\. Received: window_size=0"):
        SSIM(2, 1.5, 0)
    with pytest.raises(ValueError, match=r"`max_value` must be a positive number\. Received: max_value=-1"):
        PSNR(max_value=-1)
    with pytest.raises(
        ValueError, match=r"SSIM\(3\) expects images of shape \(N, 3, H, W\)\. Received: input.shape=\(7, 2, 16, 16\)"
    ):
        SSIM(3)(x, y)
    with pytest.raises(ValueError, match=r"at least 176 pixels.*Received: input.shape=\(7, 2, 16, 16\)"):
        MS_SSIM(2)(x, y)
    with pytest.raises(ValueError, match=r"Received: input.shape=\(7, 2, 16, 16\), target.shape=\(7, 2, 16, 15\)"):
        MSE()(x, y[..., :15])
