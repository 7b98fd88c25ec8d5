"""`Loss`: weight, target selection, the sample-weighted epoch mean, decorators and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import MSE, BaseLoss, CrossEntropy, Dice, Identity, Loss, loss, loss_fn


def logits_and_labels(n: int, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)


def test_base_loss_is_upstreams_name_for_loss() -> None:
    assert BaseLoss is Loss


def test_loss_wraps_a_torch_module_and_returns_the_value_with_gradient() -> None:
    x, y = logits_and_labels(6)
    x.requires_grad_(True)
    value = Loss(torch.nn.CrossEntropyLoss())(x, y)
    value.backward()
    x_ref = x.detach().clone().requires_grad_(True)
    F.cross_entropy(x_ref, y).backward()
    torch.testing.assert_close(value, F.cross_entropy(x.detach(), y))
    assert x.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_weight_multiplies_the_value_the_gradient_and_the_result() -> None:
    x, y = logits_and_labels(5)
    x.requires_grad_(True)
    weighted = CrossEntropy(weight=0.25)
    value = weighted(x, y)
    value.backward()
    x_ref = x.detach().clone().requires_grad_(True)
    (0.25 * F.cross_entropy(x_ref, y)).backward()
    torch.testing.assert_close(value, 0.25 * F.cross_entropy(x.detach(), y))
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(weighted.result, 0.25 * F.cross_entropy(x.detach(), y))


def test_weight_zero_is_allowed_and_setting_it_later_is_checked() -> None:
    x, y = logits_and_labels(4)
    ce = CrossEntropy(weight=0)
    assert ce(x, y).item() == 0.0
    ce.weight = 2
    torch.testing.assert_close(ce(x, y), 2 * F.cross_entropy(x, y))
    with pytest.raises(ValueError, match=r"`weight` must be a finite, non-negative float\. Received: weight=-0\.5"):
        ce.weight = -0.5


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_negative_or_non_finite_weight_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"`weight` must be a finite, non-negative float\. Received: weight="):
        CrossEntropy(weight=bad)


def test_non_number_weight_is_refused() -> None:
    with pytest.raises(TypeError, match=r"`weight` must be a finite, non-negative float\. Received: weight='1'"):
        Loss(F.mse_loss, weight="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Received: weight=True"):
        Loss(F.mse_loss, weight=True)


def test_result_is_the_sample_weighted_mean_over_uneven_batches() -> None:
    x, y = logits_and_labels(10)
    ce = CrossEntropy(weight=2)
    for start, stop in ((0, 3), (3, 8), (8, 10)):
        ce(x[start:stop], y[start:stop])
    # the mean of batch means (3, 5, 2 samples) would differ; the epoch value is the one-shot loss
    torch.testing.assert_close(ce.result, 2 * F.cross_entropy(x, y))
    batch_means = torch.stack([F.cross_entropy(x[a:b], y[a:b]) for a, b in ((0, 3), (3, 8), (8, 10))])
    assert not torch.allclose(ce.result, 2 * batch_means.mean())


def test_reset_forgets_every_batch() -> None:
    x, y = logits_and_labels(8)
    mse = MSE()
    mse(x, x + 1)
    mse.reset()
    assert torch.isnan(mse.result)
    mse(x[:3], torch.zeros_like(x[:3]))
    mse(x[3:], torch.zeros_like(x[3:]))
    torch.testing.assert_close(mse.result, (x**2).mean())
    del y


def test_state_stays_a_tensor_and_is_detached() -> None:
    x, y = logits_and_labels(4)
    x.requires_grad_(True)
    ce = CrossEntropy()
    ce(x, y)
    assert isinstance(ce.result, torch.Tensor)
    assert not ce.result.requires_grad


def test_target_picks_the_dict_output_and_a_tensor_label() -> None:
    x, y = logits_and_labels(6)
    outputs = {"output1": x, "output2": torch.zeros(6, 3)}
    torch.testing.assert_close(CrossEntropy(target="output1")(outputs, y), F.cross_entropy(x, y))


def test_target_picks_the_dict_output_and_the_dict_label() -> None:
    x, y = logits_and_labels(6)
    _, other = logits_and_labels(6, seed=1)
    outputs = {"output1": x, "output2": torch.zeros(6, 3)}
    labels = {"output1": y, "output2": other}
    torch.testing.assert_close(CrossEntropy(target="output1")(outputs, labels), F.cross_entropy(x, y))


def test_target_counts_samples_of_the_picked_label() -> None:
    x, y = logits_and_labels(10)
    ce = CrossEntropy(target="a")
    ce({"a": x[:2], "b": torch.zeros(7)}, {"a": y[:2]})
    ce({"a": x[2:], "b": torch.zeros(1)}, {"a": y[2:]})
    torch.testing.assert_close(ce.result, F.cross_entropy(x, y))


def test_unknown_target_key_names_the_keys() -> None:
    x, y = logits_and_labels(3)
    with pytest.raises(
        KeyError,
        match=r"CrossEntropy\(target='out'\) found no such key in the model output\. Expected one of \['a', 'b'\]",
    ):
        CrossEntropy(target="out")({"a": x, "b": x}, y)
    with pytest.raises(KeyError, match=r"found no such key in the label\. Expected one of \['x'\]"):
        CrossEntropy(target="out")({"out": x}, {"x": y})


def test_non_string_target_is_refused() -> None:
    with pytest.raises(
        TypeError, match=r"`target` must be a key \(str\) of the model's output dict, or None\. Received: target=1"
    ):
        CrossEntropy(target=1)  # type: ignore[arg-type]


def test_a_loss_that_is_not_reduced_is_refused() -> None:
    x = torch.randn(4, 2)
    with pytest.raises(
        ValueError,
        match=r"Loss must reduce to a scalar loss \(one element\), e\.g\. with `\.mean\(\)`\. Received: loss of shape \(4, 2\)",
    ):
        Loss(lambda a, b: a - b)(x, x)


def test_a_loss_that_is_not_a_tensor_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Loss must compute a torch\.Tensor loss\. Received: loss=float"):
        Loss(lambda a, b: 1.0)(torch.ones(1), torch.ones(1))


def test_loss_fn_must_be_callable_and_a_bare_loss_needs_one() -> None:
    with pytest.raises(TypeError, match=r"`loss_fn` must be callable as fn\(input, target\)\. Received: loss_fn=3"):
        Loss(3)  # type: ignore[arg-type]
    with pytest.raises(
        NotImplementedError, match=r"Loss has no `loss_fn`: pass one to the constructor or override `forward`"
    ):
        Loss()(torch.ones(1), torch.ones(1))


def test_subclass_overriding_forward() -> None:
    class L1(Loss):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return (input - target).abs().mean()

    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0])
    assert L1(weight=3)(a, b).item() == pytest.approx(4.5)


def test_loss_decorator() -> None:
    @loss
    def squared(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of squares."""
        return ((input - target) ** 2).sum()

    a, b = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    assert isinstance(squared, Loss)
    assert squared.__name__ == "squared" and squared.__doc__ == "Sum of squares."
    assert squared(a, b).item() == pytest.approx(5.0)
    assert squared.result.item() == pytest.approx(5.0)


def test_loss_fn_decorator_with_target_and_weight() -> None:
    @loss_fn(target="out", weight=0.5)
    def l1(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (input - target).abs().mean()

    a, b = torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0])
    assert (l1.target, l1.weight) == ("out", 0.5)
    assert l1({"out": a, "aux": b}, {"out": b}).item() == pytest.approx(1.0)


def test_loss_fn_decorator_checks_the_weight_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"`weight` must be a finite, non-negative float\. Received: weight=-1"):
        loss_fn(weight=-1)


def test_identity_returns_the_output_weighted() -> None:
    value = torch.tensor(2.5, requires_grad=True)
    identity = Identity(weight=2)
    out = identity(value)
    out.backward()
    assert out.item() == 5.0 and value.grad is not None and value.grad.item() == 2.0
    assert Identity(target="loss")({"loss": value, "other": torch.ones(3)}).item() == 2.5


def test_state_dict_round_trip_keeps_the_epoch_mean() -> None:
    x, y = logits_and_labels(7)
    ce = CrossEntropy()
    ce(x[:3], y[:3])
    restored = CrossEntropy()
    restored.load_state_dict(ce.state_dict())
    restored(x[3:], y[3:])
    torch.testing.assert_close(restored.result, F.cross_entropy(x, y))


def test_dice_unknown_target_in_multi_output_dict() -> None:
    with pytest.raises(KeyError, match=r"Dice\(target='seg'\) found no such key"):
        Dice(target="seg")({"cls": torch.zeros(1, 2)}, torch.zeros(1))
