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
