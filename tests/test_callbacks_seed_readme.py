"""The seed README's callbacks snippet, run as written: TensorBoard('logs') and LastCheckpoint(manager, 'last.model').

The event files are read back and compared with the summaries the fit reported; the checkpoint is
loaded into a fresh manager and must predict exactly as the trained model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchmanager
import torchmanager.callbacks
from torchmanager.data import Dataset


def make_xy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def make_data(n: int, seed: int) -> Dataset[Any]:
    return Dataset.from_tensor_slices(make_xy(n, seed), batch_size=16)


class PytorchModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def make_manager() -> torchmanager.Manager:
    torch.manual_seed(0)
    model = PytorchModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    metrics = {"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()}
    return torchmanager.Manager(model, optimizer, loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics)


def scalars(log_dir: str, tag: str, line: str) -> list[tuple[int, float]]:
    events = EventAccumulator(os.path.join(log_dir, f"{tag}_{line}"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_readme_callbacks_snippet(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = make_manager()
    training_dataset, val_dataset = make_data(80, seed=1), make_data(40, seed=2)
    summaries: list[dict[str, float]] = []
    record = torchmanager.callbacks.LambdaCallback(post_fn=lambda epoch, summary: summaries.append(summary))

    tensorboard_callback = torchmanager.callbacks.TensorBoard("logs")  # tensorboard dependency required
    last_ckpt_callback = torchmanager.callbacks.LastCheckpoint(manager, "last.model")
    model = manager.fit(
        training_dataset,
        epochs=3,
        val_dataset=val_dataset,
        callbacks_list=[tensorboard_callback, last_ckpt_callback, record],
    )

    assert len(summaries) == 3
    for name in ("loss", "accuracy"):
        assert scalars("logs", name, "train") == [
            (e + 1, pytest.approx(s[name], rel=1e-6)) for e, s in enumerate(summaries)
        ]
        assert scalars("logs", name, "val") == [
            (e + 1, pytest.approx(s[f"val_{name}"], rel=1e-6)) for e, s in enumerate(summaries)
        ]

    restored = torchmanager.Manager.from_checkpoint("last.model", model=PytorchModel())
    assert restored.current_epoch == 3
    x, _ = make_xy(40, seed=2)
    with torch.no_grad():
        assert torch.equal(restored.raw_model(x), model(x))
    assert torch.load("last.model", weights_only=True)["format"] == "torchmanager.checkpoint"


def test_import_torchmanager_alone_gives_callbacks_and_configs() -> None:
    # the README writes `import torch, torchmanager` and then `torchmanager.callbacks.TensorBoard(...)`
    code = (
        "import torchmanager; print(torchmanager.callbacks.TensorBoard.__name__, torchmanager.configs.Configs.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "TensorBoard Configs", result.stderr[-500:]
