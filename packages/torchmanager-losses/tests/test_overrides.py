"""Every extension point of every public loss is honoured: a subclass's `forward` and `update`,
hooks registered on the loss (forward, pre-forward and backward), and a user's module given as
`loss_fn` (its own hooks and `__call__`). The classes come from the package's `__all__`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from losses_testkit import CASES, LABELS, LOGITS, TARGETS, build, public_loss_classes, subclass_of

from torchmanager_losses import CrossEntropy, FocalCrossEntropy, Loss, MultiLosses


def make(name: str, **methods: Any) -> tuple[Loss, Any, Any]:
    """The case's loss (a subclass defining `methods`, if any, built with the same arguments) and its batch."""
    constructor, input, target = CASES[name]
    return build(constructor, subclass_of(constructor, **methods) if methods else None), input, target


def test_every_public_loss_class_has_a_case() -> None:
    assert set(public_loss_classes()) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_constant_forward_is_called_and_is_the_result(name: str) -> None:
    calls: list[int] = []

    def forward(self: Loss, input: Any, target: Any = None) -> torch.Tensor:
        calls.append(1)
        return torch.tensor(0.25)

    loss, input, target = make(name, forward=forward)
    assert loss(input, target).item() == 0.25
    assert loss(input, target).item() == 0.25
    assert calls == [1, 1]
    assert loss.result.item() == 0.25


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_scaling_forward_scales_the_value_the_gradient_and_the_result(name: str) -> None:
    base, input, target = make(name)

    def forward(self: Loss, input: Any, target: Any = None) -> torch.Tensor:
        return 3 * type(base).forward(self, input, target)

    loss, _, _ = make(name, forward=forward)
    x = input.clone().requires_grad_(True)
    x_ref = input.clone().requires_grad_(True)
    loss(x, target).backward()
    expected = 3 * base.evaluate(x_ref, target)
    expected.backward()
    torch.testing.assert_close(loss.result, expected.detach())
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_replaced_update_runs_on_every_call(name: str) -> None:
    seen: list[int] = []

    def update(self: Loss, input: Any, target: Any = None) -> torch.Tensor:
        seen.append(1)
        return type(self).__mro__[1].update(self, input, target) * 0 - 1  # type: ignore[attr-defined, no-any-return]

    loss, input, target = make(name, update=update)
    reference, _, _ = make(name)
    assert loss(input, target).item() == -1
    reference(input, target)
    assert seen == [1]
    torch.testing.assert_close(loss.result, reference.result)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_hooks_see_each_call_and_may_replace_what_it_returns(name: str) -> None:
    loss, input, target = make(name)
    reference, _, _ = make(name)
    seen: list[tuple[Any, ...]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        seen.append((module, args, output))
        return output * 0 + 7

    handle = loss.register_forward_hook(hook)
    assert loss(input, target).item() == 7
    expected = reference(input, target)
    assert len(seen) == 1 and seen[0][0] is loss and seen[0][1][0] is input
    torch.testing.assert_close(seen[0][2], expected)
    torch.testing.assert_close(loss.result, reference.result)  # the state kept the real batch value
    handle.remove()
    loss(input, target)
    assert len(seen) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_pre_hooks_may_replace_the_batch_the_state_records(name: str) -> None:
    loss, input, target = make(name)
    other = input * 0.5 - 0.25  # the same shape and dtype; a different value for every loss here
    loss.register_forward_pre_hook(lambda module, args: (other, args[1]))
    reference, _, _ = make(name)
    torch.testing.assert_close(loss(input, target), reference(other, target))
    torch.testing.assert_close(loss.result, reference.result)
    assert not torch.allclose(reference.result, make(name)[0](input, target))


@pytest.mark.parametrize("name", ["CrossEntropy", "MSE", "MultiLosses", "Loss"])
def test_full_backward_hooks_see_the_loss_gradients(name: str) -> None:
    loss, input, target = make(name)
    seen: list[tuple[Any, Any]] = []
    loss.register_full_backward_hook(lambda module, grad_input, grad_output: seen.append((grad_input, grad_output)))
    x = input.clone().requires_grad_(True)
    loss(x, target).backward()
    x_ref = input.clone().requires_grad_(True)
    make(name)[0].evaluate(x_ref, target).backward()
    assert len(seen) == 1
    grad_input, grad_output = seen[0]
    torch.testing.assert_close(grad_output[0], torch.ones(()))
    torch.testing.assert_close(grad_input[0], x_ref.grad)


def test_hooks_on_a_part_fire_when_the_multi_loss_is_called() -> None:
    ce, focal = CrossEntropy(), FocalCrossEntropy(gamma=2)
    seen: list[torch.Tensor] = []
    focal.register_forward_hook(lambda module, args, output: seen.append(output))
    MultiLosses([ce, focal])(LOGITS, LABELS)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], FocalCrossEntropy(gamma=2).evaluate(LOGITS, LABELS))


def test_the_issue_example_a_multi_loss_with_its_own_forward() -> None:
    """Issue 11, kind 6: the override was never called; the sum of the parts was returned instead."""

    class WithPenalty(MultiLosses):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return super().forward(input, target) + input.square().mean()

    multi = WithPenalty([CrossEntropy(), FocalCrossEntropy(gamma=2, weight=0.5)], weight=2)
    value = multi(LOGITS, LABELS)
    expected = 2 * (F.cross_entropy(LOGITS, LABELS) + FocalCrossEntropy(gamma=2, weight=0.5).evaluate(LOGITS, LABELS))
    expected = expected + 2 * LOGITS.square().mean()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(multi.result, expected)


class Scaled(torch.nn.Module):
    """A user's loss module with its own `__call__` (as some wrappers have): it must be called whole."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(input, target)

    def __call__(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 10 * super().__call__(input, target)  # type: ignore[no-any-return]


def test_a_users_module_is_called_whole_with_its_hooks_and_its_call() -> None:
    module = torch.nn.MSELoss()
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, output: seen.append(output))
    Loss(module)(LOGITS, TARGETS)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], F.mse_loss(LOGITS, TARGETS))
    loss = Loss(Scaled())
    torch.testing.assert_close(loss(LOGITS, TARGETS), 10 * F.mse_loss(LOGITS, TARGETS))
    torch.testing.assert_close(loss.result, 10 * F.mse_loss(LOGITS, TARGETS))
