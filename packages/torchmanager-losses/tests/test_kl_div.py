"""KLDiv against torch.nn.functional and the distillation formula written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import KLDiv


def logits(seed: int) -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))


def test_without_temperature_it_is_torchs_kl_div() -> None:
    log_q, p = logits(0).log_softmax(1), logits(1).softmax(1)
    torch.testing.assert_close(KLDiv(reduction="batchmean")(log_q, p), F.kl_div(log_q, p, reduction="batchmean"))
    torch.testing.assert_close(KLDiv(reduction="sum")(log_q, p), (p * (p.log() - log_q)).sum())
    torch.testing.assert_close(
        KLDiv(reduction="batchmean", log_target=True)(log_q, p.log()), F.kl_div(log_q, p, reduction="batchmean")
    )


def test_default_reduction_is_torchs() -> None:
    log_q, p = logits(0).log_softmax(1), logits(1).softmax(1)
    with pytest.warns(UserWarning, match="batchmean"):
        torch.testing.assert_close(KLDiv()(log_q, p), (p * (p.log() - log_q)).mean())


def test_temperature_softens_both_sides_and_scales_by_its_square() -> None:
    student, teacher, t = logits(0), logits(1), 4.0
    p = (teacher / t).exp() / (teacher / t).exp().sum(1, keepdim=True)
    q = (student / t).exp() / (student / t).exp().sum(1, keepdim=True)
    expected = t**2 * (p * (p / q).log()).sum() / 5
    kl = KLDiv(reduction="batchmean", softmax_temperature=t)
    torch.testing.assert_close(kl(student, teacher), expected)
    # log_target only changes how the softened teacher is handed to torch
    torch.testing.assert_close(
        KLDiv(reduction="batchmean", log_target=True, softmax_temperature=t)(student, teacher), expected
    )
    # upstream softened the teacher without the temperature: a different value
    upstream = t**2 * F.kl_div((student / t).log_softmax(1), teacher.softmax(1), reduction="batchmean")
    assert abs(upstream.item() - expected.item()) > 1e-3


def test_gradient_matches_the_formula() -> None:
    student, teacher = logits(0), logits(1)

    def reference(s: torch.Tensor) -> torch.Tensor:
        p = (teacher / 2).softmax(1)
        return 4 * (p * (p.log() - (s / 2).log_softmax(1))).sum() / 5

    a = student.clone().requires_grad_(True)
    b = student.clone().requires_grad_(True)
    KLDiv(reduction="batchmean", softmax_temperature=2)(a, teacher).backward()
    reference(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_replace_nan_gives_a_finite_loss() -> None:
    log_q, p = logits(0).log_softmax(1), logits(1).softmax(1)
    log_q[0, 0] = float("nan")
    assert torch.isnan(KLDiv(reduction="sum")(log_q, p))
    assert torch.isfinite(KLDiv(reduction="sum", replace_nan=True)(log_q, p))


def test_unreduced_kl_div_is_refused_by_a_call() -> None:
    with pytest.raises(
        ValueError, match=r"KLDiv must reduce to a scalar loss \(one element\).*Received: loss of shape \(5, 4\)"
    ):
        KLDiv(reduction="none")(logits(0).log_softmax(1), logits(1).softmax(1))


@pytest.mark.parametrize("bad", [0, -1.0, float("inf")])
def test_temperature_must_be_positive(bad: float) -> None:
    with pytest.raises(
        ValueError, match=r"`softmax_temperature` must be a positive float or None\. Received: softmax_temperature="
    ):
        KLDiv(softmax_temperature=bad)
