"""FID, KID and the extractor score against scipy/numpy references, over uneven batches."""

from __future__ import annotations

import sys

import pytest
import torch
from metrics_references import reference_fid, reference_inception_score, reference_mmd2

from torchmanager_metrics import FID, KID, ExtractorScore, FeatureMetric, fid, inception_score, kid, polynomial_mmd2

SPLITS = ((0, 3), (3, 4), (4, 20))


def features(n: int = 20, m: int = 17, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    fake = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    return fake, torch.randn(m, d, generator=gen, dtype=torch.float64)


def stream(m: torch.nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    for lo, hi in SPLITS:
        m(fake[lo:hi], real[lo:hi])
    return m.result  # type: ignore[no-any-return]


def test_fid_uses_the_covariance_over_samples() -> None:
    """The covariance is over samples, (D, D); upstream 1.5's `features.cov()` took it over features, (N, N)."""
    fake, real = features()
    expected = reference_fid(fake.numpy(), real.numpy())
    assert fid(fake, real).item() == pytest.approx(expected, rel=1e-6)
    m = FID()
    assert stream(m, fake, real).item() == pytest.approx(expected, rel=1e-6)
    assert m.fake_outer.shape == (5, 5) and m.real_sum.shape == (5,)  # constant memory


def test_fid_update_returns_nan_and_needs_two_samples_per_side() -> None:
    fake, real = features(d=1)  # two samples give a full-rank covariance in one dimension
    m = FID()
    assert torch.isnan(m(fake[:1], real[:1]))
    assert torch.isnan(m.result)
    m(fake[1:2], real[1:2])
    assert m.result.item() == pytest.approx(reference_fid(fake[:2].numpy(), real[:2].numpy()), rel=1e-6)


def test_fid_without_scipy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, real = features()
    m = FID()
    m(fake, real)
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r'pip install "torchmanager-metrics\[fid\]"'):
        m.compute()


def test_kid_is_the_unbiased_polynomial_mmd_of_fake_against_real() -> None:
    """KID keeps fake and real apart; upstream 1.5 put k(fake, real) in the fake-fake term."""
    fake, real = features()
    expected = 100 * reference_mmd2(fake.numpy(), real.numpy())
    assert stream(KID(), fake, real).item() == pytest.approx(expected, rel=1e-6)
    assert (100 * kid(fake, real)).item() == pytest.approx(expected, rel=1e-6)
    f, r = fake.numpy(), real.numpy()
    kern = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    upstream = 100 * ((kern(f, r).sum() + kern(r, r).sum()) / (20 * 19) - 2 * kern(f, r).sum() / 20**2)
    assert expected != pytest.approx(upstream, rel=1e-3)
    assert polynomial_mmd2(fake, real, degree=2, c=0.5).item() == pytest.approx(reference_mmd2(f, r, 2, 0.5), rel=1e-6)


def test_kid_subsets_of_every_sample_give_the_full_estimate() -> None:
    fake, real = features(n=17)
    full = KID()
    full(fake, real)
    subsets = KID(subset_size=17, num_subsets=2, seed=3)
    subsets(fake, real)
    assert subsets.result.item() == pytest.approx(full.result.item(), rel=1e-9)
    with pytest.raises(
        ValueError, match=r"`subset_size` must not exceed.*Received: subset_size=18, samples=17 fake, 17 real"
    ):
        kid(fake, real, subset_size=18)
    with pytest.raises(ValueError, match=r"`subset_size` must be an int >= 2 or None\. Received: subset_size=1"):
        KID(subset_size=1)


class Linear(torch.nn.Module):
    """A tiny extractor that refuses integer input, so labels passed to it would fail loudly."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError("labels reached the extractor")
        return self.dropout(x) @ self.weight


def test_extractor_score_is_the_inception_score_and_ignores_labels() -> None:
    logits, _ = features(d=4)
    labels = torch.zeros(20, dtype=torch.long)
    expected = reference_inception_score(logits.numpy())
    assert stream(ExtractorScore(), logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert inception_score(logits).item() == pytest.approx(expected, rel=1e-6)
    m = ExtractorScore(Linear())
    m(logits.repeat(1, 2)[:, :5], labels)
    assert m.result.item() == pytest.approx(
        reference_inception_score((logits.repeat(1, 2)[:, :5] @ m.feature_extractor.weight).detach().numpy()), rel=1e-6
    )


def test_feature_metrics_extract_both_sides_with_the_extractor_in_eval_mode() -> None:
    fake, real = features()
    m = FID(Linear())
    m.train()
    assert m.training and not m.feature_extractor.training  # dropout stays off
    stream(m, fake, real)
    w = m.feature_extractor.weight.detach().numpy()
    assert m.result.item() == pytest.approx(reference_fid(fake.numpy() @ w, real.numpy() @ w), rel=1e-6)
    with pytest.raises(
        TypeError, match=r"`feature_extractor` must be a torch.nn.Module or None\. Received: feature_extractor=3"
    ):
        FeatureMetric(feature_extractor=3)  # type: ignore[arg-type]


def test_state_dict_round_trip_and_merge_of_halves() -> None:
    fake, real = features()
    for make in (FID, KID, ExtractorScore):
        first, second, whole = make(), make(), make()
        first(fake[:7], real[:7])
        second(fake[7:], real[7:])
        whole(fake, real)
        restored = make()
        restored.load_state_dict(first.state_dict())
        torch.testing.assert_close(restored.result, first.result)
        restored.merge_state(second)
        torch.testing.assert_close(restored.result, whole.result)


def test_target_key_picks_entries_of_dicts() -> None:
    fake, real = features()
    m = KID(target="img")
    m({"img": fake}, {"img": real})
    assert m.result.item() == pytest.approx(100 * reference_mmd2(fake.numpy(), real.numpy()), rel=1e-6)


def test_upstream_only_arguments_are_accepted_with_a_deprecation_warning() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"`FID\(accumulative=\.\.\.\)` is deprecated.*Received: accumulative=True"
    ):
        FID(accumulative=True)
    with pytest.warns(
        DeprecationWarning, match=r"`FID\(use_linalg=\.\.\.\)` is deprecated.*Received: use_linalg=False"
    ):
        FID(use_linalg=False)
    with pytest.warns(DeprecationWarning, match=r"`KID\(accumulative=\.\.\.\)` is deprecated"):
        KID(accumulative=False)


def test_bad_features_name_the_value() -> None:
    fake, real = features()
    with pytest.raises(
        ValueError,
        match=r"`input` and `target` features must have the same size\. Received: input features=5, target features=4",
    ):
        FID()(fake, real[:, :4])
    with pytest.raises(
        ValueError, match=r"`target` features must be a tensor of shape \(N, D, \.\.\.\)\. Received: target=\(17,\)"
    ):
        KID()(fake, real[:, 0])
