"""Every Python example of the README runs, in order, in a temporary folder."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 4
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)
    assert (tmp_path / "ckpt" / "last.model").is_file() and (tmp_path / "ckpt" / "best.model").is_file()
    assert namespace["manager"].current_epoch >= 4
    # the Experiment example, with the names it leaves to the reader
    x = torch.randn(32, 4)
    namespace.update(
        configs=SimpleNamespace(epochs=10, lr=0.1),
        training_dataset=[(x, (x[:, 0] > 0).long())],
        val_dataset=[(x, (x[:, 0] > 0).long())],
    )
    # the example monitors accuracy: give the manager a metric
    namespace["manager"] = type(namespace["manager"])(
        namespace["model"],
        torch.optim.SGD(namespace["model"].parameters(), lr=0.1),
        loss_fn=torch.nn.CrossEntropyLoss(),
        metrics={"accuracy": lambda y, t: (y.argmax(-1) == t).float().mean()},
    )
    exec(blocks[1], namespace)
    files = sorted(
        str(p.relative_to(tmp_path))
        for p in (tmp_path / "experiments").rglob("*")
        if p.is_file() and "data" not in p.parts
    )
    assert files == [
        "experiments/test.exp/checkpoints/best-accuracy.model",
        "experiments/test.exp/checkpoints/best-loss.model",
        "experiments/test.exp/checkpoints/best_accuracy.model",
        "experiments/test.exp/checkpoints/best_loss.model",
        "experiments/test.exp/checkpoints/last.model",
        "experiments/test.exp/test.cfg",
        "experiments/test.exp/test.log",
    ]
    capsys.readouterr()
    namespace["manager"].current_epoch = 0  # the last example is a fresh one-epoch run
    exec(blocks[2], namespace)
    assert re.search(r"^0 \S+ \S+$", capsys.readouterr().out, re.M)
    # the MLflow example: its run, read back with MLflow's client
    namespace["manager"].current_epoch = 0
    namespace.update(configs=argparse.Namespace(epochs=2, lr=0.1))  # LastCheckpoint: imported by the first block
    exec(blocks[3], namespace)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("tour").experiment_id])
    assert run.data.params == {"epochs": "2", "lr": "0.1"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.model"]
