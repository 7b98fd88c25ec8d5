"""The seed README's "saved experiment information": Experiment('test.exp', manager) as written, the folder
layout file by file, the log and event files read back, the best checkpoint reloaded and tested."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import pytest
import torch
import yaml

import torchmanager
import torchmanager.configs
from tests.test_callbacks_seed_readme import PytorchModel, make_data, make_manager, scalars
from torchmanager.callbacks import Experiment, LambdaCallback, MonitorType
from torchmanager_core.run_log import format_value


def files_under(folder: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names
    )


def test_readme_experiment_as_written(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = make_manager()
    summaries: list[dict[str, float]] = []

    exp_callback = torchmanager.callbacks.Experiment("test.exp", manager)  # tensorboard dependency required
    model = manager.fit(
        make_data(64, 1),
        epochs=2,
        val_dataset=make_data(32, 2),
        callbacks_list=[exp_callback, LambdaCallback(post_fn=lambda e, s: summaries.append(s))],
    )

    assert isinstance(model, PytorchModel)
    files = files_under("experiments")
    assert [f for f in files if not f.startswith(os.path.join("test.exp", "data"))] == [
        os.path.join("test.exp", "checkpoints", "last.model"),
        os.path.join("test.exp", "test.log"),
    ]  # no monitors: the last checkpoint only; no configs: no .cfg
    data_files = [f for f in files if f.startswith(os.path.join("test.exp", "data"))]
    assert data_files and all(os.path.basename(f).startswith("events.out.tfevents") for f in data_files)
    log = open(os.path.join("experiments", "test.exp", "test.log")).read()
    for epoch, summary in enumerate(summaries):
        line = f"Epoch {epoch + 1}/2: " + ", ".join(f"{k}={format_value(v)}" for k, v in summary.items())
        assert line in log
    assert "Settings: model=PytorchModel (15 parameters), optimizer=SGD (lr=0.5)" in log
    assert re.search(r"INFO Experiment test: training ended$", log.strip())
    held = [h for h in logging.getLogger("torchmanager").handlers if isinstance(h, logging.FileHandler)]
    assert [h.baseFilename for h in held] == [os.path.abspath(os.path.join("experiments", "test.exp", "test.log"))]
    exp_callback.close_log()  # the log stays open after `fit` (a `test()` after it belongs to the run) until closed
    assert not [h for h in logging.getLogger("torchmanager").handlers if isinstance(h, logging.FileHandler)]
    assert scalars(os.path.join("experiments", "test.exp", "data"), "loss", "val") == [
        (e + 1, pytest.approx(s["val_loss"], rel=1e-6)) for e, s in enumerate(summaries)
    ]


class Configs(torchmanager.configs.Configs):
    epochs: int = 5
    lr: float = 0.5

    @staticmethod
    def get_arguments(parser: Any = None) -> Any:
        parser = torchmanager.configs.Configs.get_arguments(parser)
        parser.add_argument("--epochs", type=int, default=5)
        parser.add_argument("--lr", type=float, default=0.5)
        return parser

    def show_settings(self) -> None:
        pass


def test_full_layout_with_monitors_and_configs_and_best_weights(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configs = Configs.from_arguments("--epochs", "5", "-exp", "digits.exp", show_summary=False)
    manager = make_manager()
    val_dataset = make_data(40, 2)
    weights: list[dict[str, torch.Tensor]] = []
    val_accuracies: list[float] = []

    def keep(epoch: int, summary: dict[str, float]) -> None:
        weights.append({k: v.clone() for k, v in manager.raw_model.state_dict().items()})
        val_accuracies.append(summary["val_accuracy"])

    exp = Experiment(
        configs.experiment, manager, {"accuracy": MonitorType.MAX, "loss": MonitorType.MIN}, configs=configs
    )
    manager.fit(
        make_data(48, 1),
        epochs=configs.epochs,
        val_dataset=val_dataset,
        callbacks_list=[exp, LambdaCallback(post_fn=keep)],
    )

    folder = os.path.join("experiments", "digits.exp")
    assert [f for f in files_under(folder) if not f.startswith("data")] == [
        os.path.join("checkpoints", "best-accuracy.model"),
        os.path.join("checkpoints", "best-loss.model"),
        os.path.join("checkpoints", "best_accuracy.model"),  # upstream's name: a link to the same file
        os.path.join("checkpoints", "best_loss.model"),
        os.path.join("checkpoints", "last.model"),
        "digits.cfg",
        "digits.log",
    ]
    assert yaml.safe_load(open(os.path.join(folder, "digits.cfg")))["epochs"] == 5
    assert Configs.from_experiment(folder).lr == 0.5

    best_epoch = max(range(len(val_accuracies)), key=lambda e: (val_accuracies[e], -e))  # first of the best
    assert os.path.samefile(
        os.path.join(folder, "checkpoints", "best_accuracy.model"),
        os.path.join(folder, "checkpoints", "best-accuracy.model"),
    )
    restored = torchmanager.Manager.from_checkpoint(
        os.path.join(folder, "checkpoints", "best_accuracy.model"),
        model=PytorchModel(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
        loss_fn=torchmanager.losses.CrossEntropy(),
    )
    for name, tensor in restored.raw_model.state_dict().items():
        assert torch.equal(tensor, weights[best_epoch][name])
    assert restored.test(val_dataset)["accuracy"] == pytest.approx(max(val_accuracies), abs=1e-6)
