"""Metrics on features of a user-given extractor: FID, KID and the Inception-style score.

Who owns what: `FeatureMetric` runs the extractor (no weights are ever downloaded: pass your
own module, e.g. a torchvision InceptionV3 you loaded) and hands features to `update`; each
metric here says how features become state and the state a value. The module-level functions
are the pure math. scipy (extra `fid`) is imported only inside `frechet_distance`.

Convention, as upstream: `input` holds generated ("fake") samples, `target` real ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .metric import Metric, MetricFn, overrides

__all__ = [
    "FID",
    "KID",
    "AccumulativeFeatureMetric",
    "ExtractorScore",
    "FeatureMetric",
    "fid",
    "frechet_distance",
    "gaussian_moments",
    "inception_score",
    "kid",
    "polynomial_kernel",
    "polynomial_mmd2",
]


def _stat_dtype(device: torch.device) -> torch.dtype:
    """float64 for statistics, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _features_2d(features: Any, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"`{name}` features must be a tensor of shape (N, D, ...). Received: {name}={shape}")
    return features.detach().flatten(1)


def _feature_pair(input: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    fake, real = _features_2d(input, "input"), _features_2d(target, "target")
    if fake.shape[1] != real.shape[1]:
        raise ValueError(
            "`input` and `target` features must have the same size. "
            f"Received: input features={fake.shape[1]}, target features={real.shape[1]}"
        )
    return fake, real


def _warn_accumulative(accumulative: bool | None, owner: str) -> None:
    if accumulative is not None:
        warnings.warn(
            f"`{owner}(accumulative=...)` is deprecated and ignored: the result is always computed over every "
            f"sample since `reset()`. Received: accumulative={accumulative!r}",
            DeprecationWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------- functional API


def gaussian_moments(
    count: torch.Tensor | int, feature_sum: torch.Tensor, outer_sum: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (over samples, `n - 1`) from `n`, `sum x` and `sum x x^T`."""
    mean = feature_sum / count
    cov = (outer_sum - count * torch.outer(mean, mean)) / (count - 1)
    return mean, cov


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """`||m1 - m2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))` between two Gaussians (reads to the host).

    Raises:
        ImportError: scipy, which gives the matrix square root, is not installed.
    """
    try:
        from scipy import linalg  # type: ignore[import-untyped, unused-ignore]
    except ImportError as error:
        raise ImportError(
            'FID needs scipy for the matrix square root: pip install "torchmanager-metrics[fid]"'
        ) from error
    product = (cov1 @ cov2).detach().cpu().double().numpy()
    root = linalg.sqrtm(product)
    root = root[0] if isinstance(root, tuple) else root  # scipy < 1.10 may return (root, error)
    trace_root = torch.as_tensor(root.real.trace(), dtype=cov1.dtype, device=cov1.device)
    diff = mean1 - mean2
    return diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_root


def _sums(features: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    f = features.flatten(1).to(_stat_dtype(features.device))
    return f.shape[0], f.sum(dim=0), f.T @ f


def fid(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Fréchet distance between Gaussian fits of fake (`input`) and real (`target`) features.

    Covariances are over the sample axis with `n - 1` (upstream 1.5 took them over the feature
    axis): each side needs at least 2 samples.
    """
    fake, real = _feature_pair(input, target)
    return frechet_distance(*gaussian_moments(*_sums(fake)), *gaussian_moments(*_sums(real)))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, *, degree: int = 3, c: float = 1.0) -> torch.Tensor:
    """The kernel matrix `(x_i . y_j / d + c) ** degree`, `d` the feature size."""
    return (x @ y.T / x.shape[1] + c) ** degree


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor, *, degree: int = 3, c: float = 1.0) -> torch.Tensor:
    """The unbiased MMD^2 between samples `x (m, d)` and `y (n, d)` with the polynomial kernel.

    `sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 mean k(x_i, y_j)`;
    needs `m, n >= 2`.
    """
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, degree=degree, c=c)
    k_yy = polynomial_kernel(y, y, degree=degree, c=c)
    k_xy = polynomial_kernel(x, y, degree=degree, c=c)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def kid(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    degree: int = 3,
    c: float = 1.0,
    subset_size: int | None = None,
    num_subsets: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The kernel inception distance: unbiased polynomial MMD^2 of fake vs real features.

    With `subset_size=None` the estimator uses every sample (deterministic); otherwise it is the
    mean over `num_subsets` random subsets of `subset_size` samples per side (Binkowski et al.),
    drawn with `generator` (a CPU generator).
    """
    fake, real = _feature_pair(input, target)
    fake, real = fake.to(_stat_dtype(fake.device)), real.to(_stat_dtype(real.device))
    if subset_size is None:
        return polynomial_mmd2(fake, real, degree=degree, c=c)
    if subset_size > min(fake.shape[0], real.shape[0]):
        raise ValueError(
            "`subset_size` must not exceed the number of fake or real samples. "
            f"Received: subset_size={subset_size}, samples={fake.shape[0]} fake, {real.shape[0]} real"
        )
    estimates = []
    for _ in range(num_subsets):
        fake_index = torch.randperm(fake.shape[0], generator=generator)[:subset_size].to(fake.device)
        real_index = torch.randperm(real.shape[0], generator=generator)[:subset_size].to(real.device)
        estimates.append(polynomial_mmd2(fake[fake_index], real[real_index], degree=degree, c=c))
    return torch.stack(estimates).mean()


def inception_score(logits: torch.Tensor) -> torch.Tensor:
    """`exp(E_x KL(p(y|x) || p(y)))` with `p(y|x) = softmax(logits)` and `p(y)` its mean over `x`."""
    probs = _features_2d(logits, "input").to(_stat_dtype(logits.device)).softmax(dim=1)
    marginal = probs.mean(dim=0)
    return torch.exp(
        torch.special.xlogy(probs, probs).sum(dim=1).mean() - torch.special.xlogy(marginal, marginal).sum()
    )


# ---------------------------------------------------------------- classes


class FeatureMetric(Metric):
    """A metric computed on the features that `feature_extractor` gives for inputs and targets.

    The extractor runs without gradients and stays in eval mode (`train()` does not reach it);
    without one, inputs are used as features.

    Args:
        metric_fn: Optional function of `(input_features, target_features)`: its batch values
            are averaged over samples.
        feature_extractor: Optional module mapping a batch to features `(N, D, ...)`.
        target: Optional key of dict outputs and labels.
    """

    def __init__(
        self,
        metric_fn: MetricFn | None = None,
        feature_extractor: torch.nn.Module | None = None,
        *,
        target: str | None = None,
    ) -> None:
        super().__init__(metric_fn, target=target)
        if feature_extractor is not None and not isinstance(feature_extractor, torch.nn.Module):
            raise TypeError(
                f"`feature_extractor` must be a torch.nn.Module or None. Received: feature_extractor={feature_extractor!r}"
            )
        self.feature_extractor = feature_extractor.eval() if feature_extractor is not None else None

    def __call__(self, input: Any, target: Any = None) -> torch.Tensor:
        """Extract features of the selected input and target, then update the state with them.

        Hooks registered on the module fire around the update and see the features.
        """
        input, target = self._select(input, "model output"), self._select(target, "label")
        target = None if target is None else self.forward_features(target)
        return self._run_update(self.forward_features(input), target)

    @torch.no_grad()
    def forward_features(self, x: Any, /) -> Any:
        """The features of a batch: the extractor's output, or `x` itself without one."""
        return x if self.feature_extractor is None else self.feature_extractor(x)

    def train(self, mode: bool = True) -> FeatureMetric:
        """Set this metric's mode; the feature extractor stays in eval mode."""
        self.training = mode
        return self


class FID(FeatureMetric):
    """Fréchet inception distance between fake (`input`) and real (`target`) features.

    Memory is constant in the number of batches: per side the count, the feature sum `(D,)`
    and the sum of outer products `(D, D)` (float64 where the device has it), all "sum"
    states; `compute()` derives the sample covariance exactly and needs scipy (extra `fid`).
    `update` returns NaN: a batch FID would need a host-side square root every step. A subclass
    replacing `forward` makes the result the sample-weighted mean of its values.

    Args:
        feature_extractor: Optional module mapping images to features (e.g. InceptionV3 pool).
        target: Optional key of dict outputs and labels.
        accumulative: Deprecated and ignored (upstream 1.5): results always cover every sample.
        use_linalg: Deprecated and ignored (upstream 1.5): scipy always gives the square root.
    """

    real_count: torch.Tensor
    real_sum: torch.Tensor
    real_outer: torch.Tensor
    fake_count: torch.Tensor
    fake_sum: torch.Tensor
    fake_outer: torch.Tensor

    def __init__(
        self,
        feature_extractor: torch.nn.Module | None = None,
        *,
        target: str | None = None,
        accumulative: bool | None = None,
        use_linalg: bool | None = None,
    ) -> None:
        super().__init__(feature_extractor=feature_extractor, target=target)
        _warn_accumulative(accumulative, "FID")
        if use_linalg is not None:
            warnings.warn(
                "`FID(use_linalg=...)` is deprecated and ignored: the matrix square root always comes from "
                f"scipy.linalg.sqrtm (upstream's elementwise fallback was not a matrix square root). Received: use_linalg={use_linalg!r}",
                DeprecationWarning,
                stacklevel=2,
            )
        for side in ("real", "fake"):
            for stat in ("count", "sum", "outer"):
                # 0-dim defaults broadcast to (D,) and (D, D) on the first batch, and back on reset
                self.add_state(f"{side}_{stat}", torch.zeros((), dtype=torch.float64), "sum")
        self._fused = not overrides(self, FID, "forward")  # else a mean of the subclass's forward

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The FID of this batch alone (pure; reads to the host for the square root)."""
        return fid(input, target)

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self._fused:
            return super().update(input, target)
        fake, real = _feature_pair(input, target)
        for side, features in (("fake", fake), ("real", real)):
            count, feature_sum, outer_sum = _sums(features)
            for stat, value in (("count", count), ("sum", feature_sum), ("outer", outer_sum)):
                name = f"{side}_{stat}"
                setattr(self, name, getattr(self, name).to(device=fake.device, dtype=feature_sum.dtype) + value)
        return torch.full((), float("nan"), device=fake.device)

    def compute(self) -> torch.Tensor:
        """The FID over every sample since `reset()`; NaN while a side has fewer than 2 samples."""
        if not self._fused:
            return super().compute()
        if min(self.real_count.item(), self.fake_count.item()) < 2:  # compute is not the hot path
            return torch.full((), float("nan"), dtype=self.real_sum.dtype, device=self.real_sum.device)
        real = gaussian_moments(self.real_count, self.real_sum, self.real_outer)
        fake = gaussian_moments(self.fake_count, self.fake_sum, self.fake_outer)
        return frechet_distance(*fake, *real)


class AccumulativeFeatureMetric(FeatureMetric):
    """A feature metric that keeps every fake and real feature ("cat" states) until `reset()`.

    Memory grows with the number of samples; subclasses say how the kept features score in
    `compute_score()`, and `forward` gives the same score on one batch.
    """

    features_fake: torch.Tensor
    features_real: torch.Tensor

    def __init__(
        self,
        metric_fn: MetricFn | None = None,
        feature_extractor: torch.nn.Module | None = None,
        *,
        target: str | None = None,
    ) -> None:
        super().__init__(metric_fn, feature_extractor, target=target)
        self.add_state("features_fake", torch.zeros(0), "cat")
        self.add_state("features_real", torch.zeros(0), "cat")

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fake, real = _feature_pair(input, target)
        # an empty (0,) float32 state concatenates with (N, D) features, so the first batch sets D; the
        # kept features take the wider dtype of the two, so bfloat16 batches never narrow float32 ones
        fake_dtype = torch.promote_types(self.features_fake.dtype, fake.dtype)
        real_dtype = torch.promote_types(self.features_real.dtype, real.dtype)
        self.features_fake = torch.cat([self.features_fake.to(fake.device, fake_dtype), fake.to(fake_dtype)])
        self.features_real = torch.cat([self.features_real.to(real.device, real_dtype), real.to(real_dtype)])
        return self.forward(fake, real)

    def compute(self) -> torch.Tensor:
        """The score over every kept feature; NaN while a side has fewer than 2 samples."""
        if min(self.features_fake.shape[0], self.features_real.shape[0]) < 2:
            return torch.full((), float("nan"), device=self.features_fake.device)
        return self.compute_score()

    def compute_score(self) -> torch.Tensor:
        """The score of `features_fake` against `features_real`: what subclasses define."""
        return self.forward(self.features_fake, self.features_real)


class KID(AccumulativeFeatureMetric):
    """Kernel inception distance: `scale` times the unbiased polynomial MMD^2 of fake vs real.

    Real and fake features are kept apart in "cat" states, so memory grows with the samples.

    Args:
        feature_extractor: Optional module mapping images to features.
        c: The kernel's additive constant.
        degree: The kernel's degree.
        scale: Factor on the result (upstream's default 100 kept).
        subset_size: Samples per side in each random subset; `None` uses every sample.
        num_subsets: Subsets averaged when `subset_size` is set.
        seed: Seed of the subset draws, so `result` is reproducible.
        target: Optional key of dict outputs and labels.
        accumulative: Deprecated and ignored (upstream 1.5): results always cover every sample.
    """

    def __init__(
        self,
        feature_extractor: torch.nn.Module | None = None,
        *,
        c: float = 1.0,
        degree: int = 3,
        scale: float = 100,
        subset_size: int | None = None,
        num_subsets: int = 100,
        seed: int = 0,
        target: str | None = None,
        accumulative: bool | None = None,
    ) -> None:
        super().__init__(feature_extractor=feature_extractor, target=target)
        _warn_accumulative(accumulative, "KID")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"`degree` must be a positive int. Received: degree={degree!r}")
        if subset_size is not None and (not isinstance(subset_size, int) or subset_size < 2):
            raise ValueError(f"`subset_size` must be an int >= 2 or None. Received: subset_size={subset_size!r}")
        if not isinstance(num_subsets, int) or num_subsets < 1:
            raise ValueError(f"`num_subsets` must be a positive int. Received: num_subsets={num_subsets!r}")
        self.c, self.degree, self.scale = c, degree, scale
        self.subset_size, self.num_subsets, self.seed = subset_size, num_subsets, seed
        self._fused = not overrides(self, KID, "forward")  # else the subclass's forward scores the kept features

    def polynomial_kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The kernel matrix between two sets of features."""
        return polynomial_kernel(x, y, degree=self.degree, c=self.c)

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The KID of one batch, over all its samples (pure)."""
        return self.scale * kid(input, target, degree=self.degree, c=self.c)

    def compute_score(self) -> torch.Tensor:
        """The KID of every kept feature (over `num_subsets` random subsets when `subset_size` is set).

        A subclass replacing `forward` scores the kept features with it instead.
        """
        if not self._fused:
            return super().compute_score()
        generator = torch.Generator().manual_seed(self.seed)
        value = kid(
            self.features_fake,
            self.features_real,
            degree=self.degree,
            c=self.c,
            subset_size=self.subset_size,
            num_subsets=self.num_subsets,
            generator=generator,
        )
        return self.scale * value


class ExtractorScore(FeatureMetric):
    """The Inception Score of generated samples: `exp(E_x KL(p(y|x) || p(y)))`.

    `feature_extractor` maps images to class logits (an InceptionV3 classifier for the usual IS);
    targets are ignored (never passed to the extractor, as upstream 1.5 did). Constant memory:
    the sum of `p(y|x)`, the sum of `sum p log p`, the count. One split over all samples (no
    split averaging). A subclass replacing `forward` makes the result the sample-weighted mean of its values.
    """

    prob_sum: torch.Tensor
    neg_entropy_sum: torch.Tensor
    samples: torch.Tensor

    def __init__(self, feature_extractor: torch.nn.Module | None = None, *, target: str | None = None) -> None:
        super().__init__(feature_extractor=feature_extractor, target=target)
        self.add_state("prob_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("neg_entropy_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("samples", torch.zeros((), dtype=torch.float64), "sum")
        self._fused = not overrides(self, ExtractorScore, "forward")  # else a mean of the subclass's forward

    def __call__(self, input: Any, target: Any = None) -> torch.Tensor:
        """Update the state with the extractor's logits of the selected input; the labels are not used."""
        return self._run_update(self.forward_features(self._select(input, "model output")), None)

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: Any = None) -> torch.Tensor:
        """The score of this batch alone (pure)."""
        return inception_score(input)

    @torch.no_grad()
    def update(self, input: torch.Tensor, target: Any = None) -> torch.Tensor:
        if not self._fused:
            return super().update(input, target)
        logits = _features_2d(input, "input")
        probs = logits.to(_stat_dtype(logits.device)).softmax(dim=1)
        for name, value in (
            ("prob_sum", probs.sum(dim=0)),
            ("neg_entropy_sum", torch.special.xlogy(probs, probs).sum()),
            ("samples", torch.full((), probs.shape[0], dtype=probs.dtype, device=probs.device)),
        ):
            setattr(self, name, getattr(self, name).to(device=probs.device, dtype=probs.dtype) + value)
        return self.forward(input)

    def compute(self) -> torch.Tensor:
        """The Inception Score over every sample since `reset()` (NaN before any)."""
        if not self._fused:
            return super().compute()
        marginal = self.prob_sum / self.samples
        return torch.exp(self.neg_entropy_sum / self.samples - torch.special.xlogy(marginal, marginal).sum())
