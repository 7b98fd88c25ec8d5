"""MultiLosses (a weighted sum recording each part) and ParallelLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchmanager_losses import MSE, CrossEntropy, Dice, Loss, MultiLosses, ParallelLoss


def batch(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    outputs = {"output1": torch.randn(n, 3, generator=gen), "output2": torch.randn(n, 2, 4, generator=gen)}
    labels = {
        "output1": torch.randint(0, 3, (n,), generator=gen),
        "output2": torch.randint(0, 2, (n, 4), generator=gen),
    }
    return outputs, labels


def dice_by_formula(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p, t = x.softmax(1), F.one_hot(y, x.shape[1]).movedim(-1, 1).float()
    return 1 - (2 * (p * t).sum() + 1e-6) / (p.sum() + t.sum() + 1e-6)


def test_total_is_the_weighted_sum_of_the_parts() -> None:
    # the seed README: {'loss1': CrossEntropy(weight=w1, target='output1'), 'loss2': Dice(target='output2')}
    y, label = batch(6)
    ce, dice = CrossEntropy(weight=0.7, target="output1"), Dice(weight=0.3, target="output2")
    total = MultiLosses([ce, dice])(y, label)
    expected = 0.7 * F.cross_entropy(y["output1"], label["output1"]) + 0.3 * dice_by_formula(
        y["output2"], label["output2"]
    )
    torch.testing.assert_close(total, expected)


def test_a_tensor_label_is_shared_by_every_part() -> None:
    gen = torch.Generator().manual_seed(1)
    y = {"output1": torch.randn(4, 3, generator=gen), "output2": torch.randn(4, 3, generator=gen)}
    label = torch.randint(0, 3, (4,), generator=gen)
    total = MultiLosses([CrossEntropy(target="output1"), CrossEntropy(target="output2")])(y, label)
    torch.testing.assert_close(total, F.cross_entropy(y["output1"], label) + F.cross_entropy(y["output2"], label))


def test_parts_result_over_uneven_batches() -> None:
    ce, mse = CrossEntropy(target="logits"), MSE(weight=0.5, target="reg")
    multi = MultiLosses([ce, mse])
    gen = torch.Generator().manual_seed(5)
    logits, classes = torch.randn(9, 3, generator=gen), torch.randint(0, 3, (9,), generator=gen)
    reg, reg_label = torch.randn(9, 2, generator=gen), torch.randn(9, 2, generator=gen)
    for a, b in ((0, 2), (2, 9)):
        multi({"logits": logits[a:b], "reg": reg[a:b]}, {"logits": classes[a:b], "reg": reg_label[a:b]})
    torch.testing.assert_close(ce.result, F.cross_entropy(logits, classes))
    torch.testing.assert_close(mse.result, 0.5 * F.mse_loss(reg, reg_label))
    torch.testing.assert_close(multi.result, ce.result + mse.result)


def test_weight_and_gradient_of_the_total() -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    MultiLosses([CrossEntropy(), CrossEntropy(weight=3)], weight=0.5)(a, y).backward()
    (2 * F.cross_entropy(b, y)).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_reset_and_forward_leave_parts_consistent() -> None:
    ce = CrossEntropy()
    multi = MultiLosses([ce])
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 3, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    multi(x, y)
    multi.reset()
    assert torch.isnan(ce.result) and torch.isnan(multi.result)
    torch.testing.assert_close(multi.forward(x, y), F.cross_entropy(x, y))
    assert torch.isnan(ce.result)  # forward computes without recording


def test_merge_state_adds_batches_part_by_part() -> None:
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 3, generator=gen), torch.randint(0, 3, (7,), generator=gen)
    first, second = MultiLosses([CrossEntropy()]), MultiLosses([CrossEntropy()])
    first(x[:3], y[:3])
    second(x[3:], y[3:])
    first.merge_state(second)
    torch.testing.assert_close(first.result, F.cross_entropy(x, y))
    torch.testing.assert_close(first.losses[0].result, F.cross_entropy(x, y))


def test_bad_parts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`losses` must hold at least one Loss\. Received: losses=\[\]"):
        MultiLosses([])
    with pytest.raises(
        TypeError,
        match=r"Every element of `losses` must be a torchmanager_losses\.Loss \(wrap a plain function with `Loss\(fn\)`\)\. Received: losses\[1\]=MSELoss\(\)",
    ):
        MultiLosses([CrossEntropy(), torch.nn.MSELoss()])  # type: ignore[list-item]


def test_parallel_loss_without_gpus_is_the_wrapped_loss() -> None:
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(6, 3, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    parallel = ParallelLoss(CrossEntropy(weight=2), device_ids=[] if not torch.cuda.is_available() else None)
    value = parallel(x, y)
    torch.testing.assert_close(value.cpu(), 2 * F.cross_entropy(x, y))
    torch.testing.assert_close(parallel.result.cpu(), 2 * F.cross_entropy(x, y))


def test_parallel_loss_wraps_only_losses() -> None:
    with pytest.raises(TypeError, match=r"`module` must be a torchmanager_losses\.Loss\. Received: module=MSELoss\(\)"):
        ParallelLoss(torch.nn.MSELoss())  # type: ignore[arg-type]
    assert isinstance(ParallelLoss(Loss(F.mse_loss)), Loss)
