"""Under torchrun (2 CPU processes) `MLflowLogger` logs from rank 0 alone: one run, each value once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_torchrun import torchrun
from tests.workspace import ROOT

mlflow_tracking = pytest.importorskip("mlflow.tracking")


@pytest.mark.slow
def test_rank_0_alone_logs_one_run(tmp_path: Path) -> None:
    done = torchrun(ROOT / "tests" / "scripts" / "ddp_mlflow.py", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["run_id"] is not None and rank1["run_id"] is None
    client = mlflow_tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert run.info.run_id == rank0["run_id"] and run.info.status == "FINISHED"
    assert run.data.params == {"world": "2"}
    epochs = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in epochs] == [1, 2]  # once each, not once a rank
    assert epochs[-1].value == pytest.approx(rank0["summary"]["loss"]) == pytest.approx(rank1["summary"]["loss"])
    steps = client.get_metric_history(run.info.run_id, "step/loss")
    assert [m.step for m in steps] == list(range(1, 9))  # 4 updates an epoch (half the batches a rank)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.model"]
