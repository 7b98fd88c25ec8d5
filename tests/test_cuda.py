"""The CUDA paths, run where a GPU is present (skipped on CPU-only machines such as CI's).

The training step must not synchronise with the device: `torch.cuda.set_sync_debug_mode("error")`
turns any synchronising call inside a step into an error.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torchmanager

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class SyncGuard(torchmanager.callbacks.Callback):
    """Makes every device synchronisation between a batch's start and end an error."""

    def on_batch_start(self, batch: int) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        torch.cuda.set_sync_debug_mode("default")

    def on_train_end(self, model: torch.nn.Module) -> None:
        torch.cuda.set_sync_debug_mode("default")


def cuda_batches(n: int = 512, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=generator)
    y = (x[:, 0] > 0).long()
    return [(x[i : i + batch_size].cuda(), y[i : i + batch_size].cuda()) for i in range(0, n, batch_size)]


def manager(**kwargs: Any) -> torchmanager.Manager:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    return torchmanager.Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
        **kwargs,
    )


def test_training_steps_never_synchronise() -> None:
    data = cuda_batches()
    _, summary = manager().fit(data, epochs=2, device="cuda", callbacks_list=[SyncGuard()], return_summary=True)
    assert summary["accuracy"] > 0.8


def test_float16_with_grad_scaler_trains() -> None:
    trained = manager(precision="16-mixed")
    _, summary = trained.fit(cuda_batches(), epochs=5, device="cuda", return_summary=True)
    assert trained.scaler is not None and trained.scaler.get_scale() > 0
    assert summary["accuracy"] > 0.8 and summary["loss"] < 0.5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_data_parallel_gives_the_single_device_values() -> None:
    data = cuda_batches()
    single = manager().test(data, device="cuda:0")
    parallel = manager().test(data, devices=[torch.device("cuda", 0), torch.device("cuda", 1)], use_multi_gpus=True)
    assert parallel == pytest.approx(single, rel=1e-5)
