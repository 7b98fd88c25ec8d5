"""`MLflowLogger` against a real local MLflow store, read back with MLflow's own `MlflowClient`.

The reference for every logged value is a hand-written training loop over the same batches
(SGD, gradient accumulation by halving each batch's loss, validation after each epoch): its batch
losses at the updates the logger samples, its sample-weighted epoch means, its validation values.
The store (a SQLite database, slow to create) is shared by the module; each test has its experiment.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from cb_testkit import Untouchable, batches, blobs
from cb_testkit import make_manager as kit_manager

from torchmanager_callbacks import BestCheckpoint, LastCheckpoint, MLflowLogger, MonitorType
from torchmanager_callbacks.mlflow_logger import flatten_params
from torchmanager_core import Manager
from torchmanager_core.configs import Configs

mlflow_tracking = pytest.importorskip("mlflow.tracking")

LR = 0.3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow") / "mlruns"


def client(folder: Path) -> Any:
    return mlflow_tracking.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")


def only_run(folder: Path, experiment: str) -> Any:
    (run,) = client(folder).search_runs([client(folder).get_experiment_by_name(experiment).experiment_id])
    return run


def history(folder: Path, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(folder).get_metric_history(run_id, name)]


def make_manager(seed: int = 0, accumulate: int = 1) -> Manager:
    return kit_manager(seed, lr=LR, accumulate_grad_batches=accumulate)


def hand_loop(
    initial: dict[str, torch.Tensor], train: list[Any], val: list[Any], epochs: int, window: int
) -> tuple[list[float], list[dict[str, float]]]:
    """Each batch's loss before its update, and each epoch's summary, training as the manager should."""
    weight, bias = (initial[k].clone().requires_grad_() for k in ("weight", "bias"))
    losses, epochs_seen = [], []
    for _ in range(epochs):
        loss_sum, correct, count = 0.0, 0, 0
        for index, (x, y) in enumerate(train):
            out = F.linear(x, weight, bias)
            loss = F.cross_entropy(out, y)
            (loss / window).backward()
            losses.append(loss.item())
            loss_sum, correct, count = (
                loss_sum + loss.item() * len(y),
                correct + int((out.argmax(1) == y).sum()),
                count + len(y),
            )
            if (index + 1) % window == 0 or index + 1 == len(train):
                with torch.no_grad():
                    for param in (weight, bias):
                        param -= LR * param.grad
                        param.grad = None
        with torch.no_grad():
            x_val, y_val = torch.cat([x for x, _ in val]), torch.cat([y for _, y in val])
            out = F.linear(x_val, weight, bias)
            val_summary = {
                "val_loss": F.cross_entropy(out, y_val).item(),
                "val_accuracy": (out.argmax(1) == y_val).float().mean().item(),
            }
        epochs_seen.append({"loss": loss_sum / count, "accuracy": correct / count, **val_summary})
    return losses, epochs_seen


def test_a_fit_with_accumulation_and_validation_is_read_back_by_mlflow(store: Path, tmp_path: Path) -> None:
    """10 batches an epoch in windows of 2: 5 updates an epoch, 15 in 3 epochs; per-step values every 2 updates."""
    train, val = batches(*blobs(40, seed=1), 4), batches(*blobs(24, seed=2), 8)
    manager = make_manager(accumulate=2)
    initial = {k: v.clone() for k, v in manager.raw_model.state_dict().items()}
    configs = argparse.Namespace(lr=LR, accumulate=2, data={"train": 40, "val": 24}, note=None)
    logger = MLflowLogger("accumulate", configs=configs, folder=store, run_name="first", log_every_n_steps=2)
    callbacks = [
        BestCheckpoint("accuracy", manager, str(tmp_path / "best.model"), monitor_type=MonitorType.MAX),
        LastCheckpoint(manager, str(tmp_path / "last.model")),
        logger,
    ]
    manager.fit(train, epochs=3, val_dataset=val, callbacks_list=callbacks)

    losses, epochs = hand_loop(initial, train, val, 3, window=2)
    run = only_run(store, "accumulate")
    assert run.info.run_id == logger.run_id and run.info.run_name == "first" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": str(LR), "accumulate": "2", "data.train": "40", "data.val": "24"}
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        logged = history(store, run.info.run_id, name)
        assert [step for step, _ in logged] == [1, 2, 3], name
        assert [value for _, value in logged] == pytest.approx([e[name] for e in epochs], rel=1e-5, abs=1e-6), name
    # update k (1-based) ends with batch 2k (1-based) of the whole stream; logged at k = 2, 4, ..., 14
    step_losses = history(store, run.info.run_id, "step/loss")
    assert [step for step, _ in step_losses] == list(range(2, 16, 2))
    assert [value for _, value in step_losses] == pytest.approx([losses[2 * k - 1] for k in range(2, 16, 2)], rel=1e-5)
    assert [step for step, _ in history(store, run.info.run_id, "step/accuracy")] == list(range(2, 16, 2))

    artifacts = client(store).list_artifacts(run.info.run_id, "checkpoints")
    assert sorted(a.path for a in artifacts) == ["checkpoints/best.model", "checkpoints/last.model"]
    downloaded = client(store).download_artifacts(run.info.run_id, "checkpoints/last.model", str(tmp_path / "down"))
    assert Path(downloaded).read_bytes() == (tmp_path / "last.model").read_bytes()
    assert (store / "artifacts").is_dir()  # in the chosen folder


def test_a_resumed_fit_goes_on_in_the_same_run(store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = batches(*blobs(24, seed=3), 8)
    first = make_manager()
    logger = MLflowLogger("resume", configs={"epochs": 2}, folder=store, log_every_n_steps=1)
    first.fit(train, epochs=2, callbacks_list=[LastCheckpoint(first, str(tmp_path / "last.model")), logger])

    again = make_manager(seed=5)
    resumed = MLflowLogger("resume", configs={"epochs": 4, "seed": 5}, folder=store, log_every_n_steps=1)
    with caplog.at_level(logging.WARNING, logger="torchmanager"):
        again.fit(train, epochs=4, callbacks_list=[resumed], resume_from=str(tmp_path / "last.model"))

    run = only_run(store, "resume")
    assert resumed.run_id == logger.run_id == run.info.run_id and run.info.status == "FINISHED"
    assert [step for step, _ in history(store, run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert [step for step, _ in history(store, run.info.run_id, "step/loss")] == list(
        range(1, 13)
    )  # 3 updates an epoch
    assert run.data.params == {"epochs": "2", "seed": "5"}  # MLflow keeps a logged parameter; a new one is added
    assert any("epochs=2" in r.getMessage() and "4" in r.getMessage() for r in caplog.records)


def test_a_tracking_uri_takes_the_run_instead_of_the_folder(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = store  # another store (a server's URI works alike): the module's, as it is slow to create
    manager = make_manager()
    logger = MLflowLogger(
        "remote", folder=tmp_path / "unused", tracking_uri=f"sqlite:///{server}/mlflow.db", log_every_n_steps=None
    )
    manager.fit(batches(*blobs(8), 4), epochs=1, callbacks_list=[logger])
    assert not (tmp_path / "unused").exists() and not (tmp_path / "mlruns").exists()
    run = only_run(server, "remote")
    assert [step for step, _ in history(server, run.info.run_id, "loss")] == [1]
    assert history(server, run.info.run_id, "step/loss") == []  # per-step metrics off


def test_only_the_main_process_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As rank 1 of a torchrun launch (before its group starts): nothing is written, nothing is read per step."""
    monkeypatch.setenv("RANK", "1")
    logger = MLflowLogger("rank1", folder=tmp_path / "mlruns", log_every_n_steps=1)
    make_manager().fit(batches(*blobs(8), 4), epochs=2, callbacks_list=[logger])
    assert logger.run_id is None and not (tmp_path / "mlruns").exists()


class FakeManager:
    global_step = 0


def test_batch_values_are_read_only_on_the_steps_logged(store: Path) -> None:
    logger = MLflowLogger("fake", folder=store, log_every_n_steps=3)
    logger.set_manager(FakeManager())
    logger.on_train_start(0)
    for step in (1, 2, 4, 5):  # never a multiple of 3: the summary must not be read
        FakeManager.global_step = step
        logger.on_batch_end(step - 1, Untouchable())
    FakeManager.global_step = 5  # no update at this batch (accumulating): not read again
    logger.on_batch_end(5, Untouchable())


def test_configs_of_each_kind_become_flat_string_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RunConfigs(Configs):
        epochs: int
        lr: float

        @staticmethod
        def get_arguments(parser: Any = None) -> Any:
            parser = argparse.ArgumentParser() if parser is None else parser
            parser.add_argument("--epochs", type=int, default=3)
            parser.add_argument("--lr", type=float, default=0.1)
            return Configs.get_arguments(parser)

        def show_settings(self) -> None:
            pass

    monkeypatch.chdir(tmp_path)
    configs = RunConfigs.from_arguments(["--epochs", "7", "-exp", "run"], show_summary=False)
    params = flatten_params(configs)
    assert params["epochs"] == "7" and params["lr"] == "0.1" and params["experiment"] == "run.exp"
    assert flatten_params(argparse.Namespace(a=1, b=[1, 2])) == {"a": "1", "b": "[1, 2]"}
    long = flatten_params({"optim": {"name": "sgd", "betas": (0.9, 0.99), "extra": {"x": None}}, "text": "y" * 7000})
    assert long == {"optim.name": "sgd", "optim.betas": "(0.9, 0.99)", "text": "y" * 5997 + "..."}
    with pytest.raises(
        TypeError,
        match=r"`configs` must be a torchmanager Configs, a dict or an argparse\.Namespace\. Received: configs=list",
    ):
        MLflowLogger(configs=[1, 2])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_log_every_n_steps_is_checked(bad: Any) -> None:
    with pytest.raises(
        ValueError,
        match=rf"`log_every_n_steps` must be a positive int, or None for no per-step metrics\. Received: log_every_n_steps={bad!r}",
    ):
        MLflowLogger(log_every_n_steps=bad)


def test_without_mlflow_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(
        ImportError, match=r'needs the mlflow package.*`pip install "torchmanager-callbacks\[mlflow\]"`'
    ):
        MLflowLogger()


def test_nothing_imports_mlflow_until_a_logger_is_made(tmp_path: Path) -> None:
    code = (
        "import sys, torchmanager, torchmanager.callbacks, torchmanager_callbacks\n"
        "from torchmanager_callbacks import MLflowLogger\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'imported early'\n"
        f"MLflowLogger(folder={str(tmp_path / 'mlruns')!r})\n"
        "assert 'mlflow.tracking' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr
