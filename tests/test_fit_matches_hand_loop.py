"""`fit` does exactly what a hand-written PyTorch loop does: same weights, same epoch values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import torchmanager


def digits_batches(batch_size: int = 100) -> list[tuple[torch.Tensor, torch.Tensor]]:
    digits = load_digits()
    x = torch.as_tensor(digits.data[:950], dtype=torch.float32) / 16  # 950: the last batch is uneven
    y = torch.as_tensor(digits.target[:950])
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_one_epoch_equals_the_hand_loop() -> None:
    batches = digits_batches()

    hand = make_model()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.2, momentum=0.9)
    loss_sum = correct = seen = 0.0
    for x, y in batches:
        out = hand(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (out.argmax(-1) == y).sum().item()
        seen += len(y)

    ours = make_model()
    manager = torchmanager.Manager(
        ours,
        torch.optim.SGD(ours.parameters(), lr=0.2, momentum=0.9),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
    )
    _, summary = manager.fit(batches, epochs=1, return_summary=True)

    assert summary["loss"] == pytest.approx(loss_sum / seen, rel=1e-5)
    assert summary["accuracy"] == pytest.approx(correct / seen, abs=1e-6)
    for a, b in zip(hand.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_segmentation_style_labels_with_an_ignore_index_and_validation(accumulate: int) -> None:
    """Labels partly `255` (as segmentation masks leave unlabelled pixels) and class weights, with gradient
    accumulation and validation: the weights, the training loss (the epoch's sums over its kept labels' total
    weight) and the validation loss (torch's cross entropy over the whole validation set at once) are the hand
    loop's."""
    class_weights = torch.linspace(0.5, 1.5, 10)
    batches = [
        (x, y.masked_fill(torch.arange(len(y)) % (i + 2) == 0, 255)) for i, (x, y) in enumerate(digits_batches())
    ]
    val_x, val_y = batches.pop()
    val_batches = [(val_x[:7], val_y[:7]), (val_x[7:], val_y[7:])]

    hand = make_model()
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.2, momentum=0.9)
    loss_sum = kept_weight = 0.0
    for index, (x, y) in enumerate(batches):
        window = min(accumulate, len(batches) - index // accumulate * accumulate)
        loss = F.cross_entropy(hand(x), y, weight=class_weights, ignore_index=255)
        (loss / window).backward()
        if (index + 1) % accumulate == 0 or index == len(batches) - 1:
            optimizer.step()
            optimizer.zero_grad()
        batch_weight = class_weights[y[y != 255]].sum().item()
        loss_sum += loss.item() * batch_weight
        kept_weight += batch_weight
    with torch.no_grad():
        val_loss = F.cross_entropy(hand(val_x), val_y, weight=class_weights, ignore_index=255).item()

    ours = make_model()
    manager = torchmanager.Manager(
        ours,
        torch.optim.SGD(ours.parameters(), lr=0.2, momentum=0.9),
        loss_fn=torchmanager.losses.CrossEntropy(class_weights, ignore_index=255),
        accumulate_grad_batches=accumulate,
    )
    _, summary = manager.fit(batches, epochs=1, val_dataset=val_batches, return_summary=True)

    assert summary["loss"] == pytest.approx(loss_sum / kept_weight, rel=1e-5)
    assert summary["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    for a, b in zip(hand.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
