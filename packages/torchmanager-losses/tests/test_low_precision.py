"""Losses fed bfloat16 or float16 model outputs directly give the float64 value (issue 11, kind 3).

Every loss is streamed over 520 uneven batches of bfloat16, float16 and float32 tensors and its
`result` compared with torch.nn.functional or a hand formula in float64 over the very same
values (a hand loop over the batches where the batch value is not a mean over samples). The
losses compute in float32 or wider, return float32 or wider, and keep float32 running sums.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from losses_testkit import CASES

from torchmanager_losses import (
    MAE,
    MSE,
    BCEWithLogits,
    CrossEntropy,
    Dice,
    DiceCE,
    FocalCrossEntropy,
    Identity,
    KLDiv,
    Loss,
    MultiLosses,
    ParallelLoss,
)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SIZES = [1 + i % 3 for i in range(520)]
Batch = tuple[torch.Tensor, torch.Tensor]
Draw = Callable[[int, torch.Generator], Batch]


def logits_and_labels(n: int, gen: torch.Generator) -> Batch:
    return torch.randn(n, 3, generator=gen) * 2, torch.randint(0, 3, (n,), generator=gen)


def maps_and_masks(n: int, gen: torch.Generator) -> Batch:
    return torch.randn(n, 3, 4, 4, generator=gen) * 2, torch.randint(0, 3, (n, 4, 4), generator=gen)


def regression(n: int, gen: torch.Generator) -> Batch:
    return torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen)


def binary(n: int, gen: torch.Generator) -> Batch:
    return torch.randn(n, 3, generator=gen) * 2, torch.randint(0, 2, (n, 3), generator=gen).float()


def distributions(n: int, gen: torch.Generator) -> Batch:
    return torch.randn(n, 3, generator=gen).log_softmax(1), torch.randn(n, 3, generator=gen).softmax(1)


def focal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(x, y, reduction="none")
    return ((1 - torch.exp(-ce)) ** 2 * ce).mean()


def soft_dice(x: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    p, t = x.softmax(1), F.one_hot(y, 3).movedim(-1, 1).double()
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


def per_batch(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[list[Batch]], torch.Tensor]:
    """The sample-weighted mean of `fn` over the batches: a hand loop, for batch values that are no sample mean."""
    return lambda batches: sum(samples(y) * fn(x, y) for x, y in batches) / sum(samples(y) for _, y in batches)


def samples(label: torch.Tensor) -> int:
    return label.shape[0] if label.dim() else 1  # a 0-dim label (Identity's) is one sample


def whole(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[list[Batch]], torch.Tensor]:
    """`fn` of every sample at once (for losses whose batch value is a mean over samples)."""
    return lambda batches: fn(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))


CASES_LOW: dict[str, tuple[Callable[[], Loss], Draw, Callable[[list[Batch]], torch.Tensor]]] = {
    "BCEWithLogits": (BCEWithLogits, binary, whole(F.binary_cross_entropy_with_logits)),
    "CrossEntropy": (CrossEntropy, logits_and_labels, whole(F.cross_entropy)),
    "CrossEntropy(label_smoothing)": (
        partial(CrossEntropy, label_smoothing=0.1),
        logits_and_labels,
        whole(partial(F.cross_entropy, label_smoothing=0.1)),
    ),
    "Dice": (Dice, maps_and_masks, per_batch(partial(soft_dice, smooth=1e-6))),
    "DiceCE": (DiceCE, maps_and_masks, per_batch(lambda x, y: F.cross_entropy(x, y) + soft_dice(x, y, 1.0))),
    "FocalCrossEntropy": (partial(FocalCrossEntropy, gamma=2), logits_and_labels, whole(focal)),
    "Identity": (
        Identity,
        lambda n, g: (torch.rand((), generator=g) * 300, torch.zeros(())),
        per_batch(lambda x, y: x),
    ),
    "KLDiv": (partial(KLDiv, reduction="batchmean"), distributions, whole(partial(F.kl_div, reduction="batchmean"))),
    "KLDiv(temperature)": (
        partial(KLDiv, softmax_temperature=2.0, reduction="batchmean"),
        logits_and_labels,  # the labels are replaced by teacher logits in `draw`
        whole(lambda x, t: 4 * F.kl_div(F.log_softmax(x / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")),
    ),
    "MAE": (MAE, regression, whole(F.l1_loss)),
    "MSE": (MSE, regression, whole(F.mse_loss)),
    "MultiLosses": (
        lambda: MultiLosses([CrossEntropy(), FocalCrossEntropy(gamma=2, weight=0.5)]),
        logits_and_labels,
        whole(lambda x, y: F.cross_entropy(x, y) + 0.5 * focal(x, y)),
    ),
    "ParallelLoss": (
        lambda: ParallelLoss(CrossEntropy(weight=2), [] if not torch.cuda.is_available() else None),
        logits_and_labels,
        whole(lambda x, y: 2 * F.cross_entropy(x, y)),
    ),
}
"""Each loss: its constructor, how to draw a batch, and its float64 reference over the batches."""


def test_every_loss_class_is_checked_in_low_precision() -> None:
    checked = {name.split("(")[0] for name in CASES_LOW}
    assert set(CASES) - {"Loss"} <= checked, sorted(set(CASES) - checked)  # `Loss(fn)` computes what `fn` does


def draw(name: str, n: int, gen: torch.Generator) -> Batch:
    x, y = CASES_LOW[name][1](n, gen)
    if name == "KLDiv(temperature)":
        y = torch.randn(n, 3, generator=gen) * 2  # teacher logits
    return x, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(CASES_LOW))
def test_streamed_low_precision_outputs_give_the_float64_value(name: str, dtype: torch.dtype) -> None:
    factory, _, reference = CASES_LOW[name]
    gen = torch.Generator().manual_seed(0)
    batches = []
    for n in SIZES:
        x, y = draw(name, n, gen)
        batches.append((x.to(dtype), y.to(dtype) if y.is_floating_point() else y))
    loss = factory()
    for x, y in batches:
        value = loss(x, y)
        assert value.dtype in (torch.float32, torch.float64) or name == "Identity"  # Identity returns the output
    expected = reference([(x.double(), y.double() if y.is_floating_point() else y) for x, y in batches])
    torch.testing.assert_close(loss.result.double(), expected.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gradients_reach_low_precision_outputs_in_their_dtype(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = logits_and_labels(8, gen)
    low = x.to(dtype).requires_grad_(True)
    CrossEntropy(weight=0.5)(low, y).backward()
    wide = low.detach().double().requires_grad_(True)
    (0.5 * F.cross_entropy(wide, y)).backward()
    assert low.grad is not None and low.grad.dtype == dtype
    torch.testing.assert_close(low.grad.double(), wide.grad, rtol=1e-2, atol=1e-3)  # one rounding to `dtype`


@pytest.mark.parametrize(("dtype", "value"), [(torch.bfloat16, 1.0), (torch.float16, 1000.0), (torch.bfloat16, 0.3)])
@pytest.mark.parametrize("weight", [1.0, 0.7])
def test_a_users_low_precision_loss_reads_back_as_its_values(dtype: torch.dtype, value: float, weight: float) -> None:
    """The issue's inputs: a plain function's loss, exactly `value` in `dtype` on each of 512 batches."""
    loss = Loss(lambda y, t: y.pow(2).mean(), weight=weight)
    multi = MultiLosses([Loss(lambda y, t: y.pow(2).mean(), weight=weight), Loss(lambda y, t: y.abs().mean())])
    root = torch.tensor(value, dtype=torch.float64).sqrt().to(dtype)
    per_batch_value = root.pow(2).double()  # what `pow(2)` gives in `dtype`: exactly `value` for 1.0 and 1000.0
    for n in SIZES[:512]:
        y = torch.full((n,), float(root), dtype=dtype)
        loss(y, None)
        multi(y, None)
    torch.testing.assert_close(loss.result.double(), weight * per_batch_value, rtol=1e-5, atol=0)
    torch.testing.assert_close(multi.result.double(), weight * per_batch_value + root.abs().double(), rtol=1e-5, atol=0)
    if weight == 1 and value != 0.3:
        assert (loss.result.item(), multi.result.item()) == (value, value + float(root))
