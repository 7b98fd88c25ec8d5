"""Independent references for the metrics tests: scipy, numpy, scikit-learn and hand formulas.

They never call torchmanager_metrics; the tests compare the metrics (streamed over batches, in
any dtype) against them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg
from scipy.signal import correlate2d
from scipy.spatial.distance import cdist
from sklearn.metrics import f1_score


def gaussian(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def reference_ssim_and_cs(
    a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5, L: float = 1.0
) -> tuple[float, float]:
    """Wang et al. (2004) with a gaussian window and 'valid' filtering, for one channel."""
    w = np.outer(gaussian(size, sigma), gaussian(size, sigma))

    def filt(z: np.ndarray) -> np.ndarray:
        return correlate2d(z, w, mode="valid")

    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    return float(np.mean((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs)), float(np.mean(cs))


def reference_ms_ssim(a: np.ndarray, b: np.ndarray, weights: tuple[float, ...]) -> float:
    """Wang, Simoncelli and Bovik (2003) for one channel: 2x2 averages between scales, negative terms clamped."""
    value = 1.0
    for scale, weight in enumerate(weights):
        full, cs = reference_ssim_and_cs(a, b)
        value *= max(full if scale == len(weights) - 1 else cs, 0) ** weight
        a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
        b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean(axis=(1, 3))
    return value


def reference_fid(fake: np.ndarray, real: np.ndarray) -> float:
    mu1, mu2 = fake.mean(axis=0), real.mean(axis=0)
    s1, s2 = (
        np.atleast_2d(np.cov(fake, rowvar=False)),
        np.atleast_2d(np.cov(real, rowvar=False)),
    )  # over samples: (D, D)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def reference_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, c: float = 1.0) -> float:
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + c) ** degree

    m, n = len(x), len(y)
    k_xx, k_yy = k(x, x), k(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k(x, y).mean())


def reference_inception_score(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def reference_dice(x: torch.Tensor, y: torch.Tensor, c: int) -> float:
    pred = x.argmax(1)
    per_sample = [
        f1_score(t.flatten(), p.flatten(), labels=list(range(c)), average=None, zero_division=1.0).mean()
        for p, t in zip(pred, y)
    ]
    return float(np.mean(per_sample))


def reference_hd(pred: np.ndarray, true: np.ndarray, percentile: float = 95) -> float:
    a, b = np.argwhere(pred), np.argwhere(true)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if len(a) == 0 or len(b) == 0:
        return math.inf
    d = cdist(a, b)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), percentile))
