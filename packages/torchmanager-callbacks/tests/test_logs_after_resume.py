"""What a logger wrote after the checkpoint a run resumes from is not written twice (issue 20, kind 6).

A run saves at optimizer update 5 (mid-epoch), writes on to update 9 (an epoch row and four step points
after the checkpoint), is interrupted there, and resumes from update 5 with new objects. Read back, the
files and stores hold each epoch and step once, with the values of a run that was never interrupted:
TensorBoard (per update, per epoch and `step/` points; TensorBoard's restart mark hides the orphaned
points), CSV (the same bytes), MLflow (each metric's history)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from cb_testkit import batches, blobs, make_manager
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchmanager_callbacks import CSVLogger, Frequency, LastCheckpoint, MLflowLogger, TensorBoard
from torchmanager_core.callbacks import Callback

DATA = batches(*blobs(32), size=8)  # four updates an epoch
EPOCHS, SAVE_AT, STOP_AT = 3, 5, 9


class Interrupt(Callback):
    """Raises after update `STOP_AT`, once every logger before it has written that update."""

    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self.manager.global_step == STOP_AT:
            raise RuntimeError("interrupted")


def loggers(folder: Path) -> list[Callback]:
    return [
        TensorBoard(folder / "per-update", Frequency.BATCH),
        TensorBoard(folder / "per-epoch", log_every_n_steps=1),
        CSVLogger(str(folder / "epochs.csv"), log_every_n_steps=1),
        MLflowLogger("runs", folder=folder / "mlflow", log_every_n_steps=1, log_checkpoints=False),
    ]


def run(folder: Path, interrupted: bool) -> None:
    manager = make_manager(lr=0.5)
    path = str(folder / "last.model")
    saving = LastCheckpoint(manager, path, freq=100, save_every_n_steps=SAVE_AT)
    if not interrupted:
        manager.fit(DATA, epochs=EPOCHS, val_dataset=DATA, callbacks_list=[*loggers(folder), saving])
        return
    with pytest.raises(RuntimeError, match="interrupted"):
        manager.fit(DATA, epochs=EPOCHS, val_dataset=DATA, callbacks_list=[*loggers(folder), saving, Interrupt()])
    resumed = make_manager(lr=0.5, seed=3)
    resumed.fit(DATA, epochs=EPOCHS, val_dataset=DATA, callbacks_list=[*loggers(folder), saving], resume_from=path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    reference, resumed = tmp_path_factory.mktemp("uninterrupted"), tmp_path_factory.mktemp("resumed")
    run(reference, interrupted=False)
    run(resumed, interrupted=True)
    return reference, resumed


def tensorboard_points(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of every event folder under `folder`, as TensorBoard shows it."""
    points = {}
    for root, _, files in os.walk(folder):
        if not any(name.startswith("events.out.tfevents") for name in files):
            continue
        events = EventAccumulator(root)
        events.Reload()
        for tag in events.Tags()["scalars"]:
            points[f"{os.path.relpath(root, folder)}:{tag}"] = [(e.step, e.value) for e in events.Scalars(tag)]
    return points


@pytest.mark.parametrize("board", ["per-update", "per-epoch"])
def test_tensorboard_shows_each_step_once(folders: tuple[Path, Path], board: str) -> None:
    reference, resumed = (tensorboard_points(folder / board) for folder in folders)
    assert reference and reference.keys() == resumed.keys()
    for series, points in reference.items():
        assert resumed[series] == points, series  # one point a step, the uninterrupted run's values
    if board == "per-update":
        assert [step for step, _ in reference["loss_train:loss"]] == list(range(1, EPOCHS * 4 + 1))
    else:
        assert [step for step, _ in reference[".:step/loss"]] == list(range(1, EPOCHS * 4 + 1))


@pytest.mark.parametrize("name", ["epochs.csv", "epochs_steps.csv"])
def test_csv_files_hold_each_row_once(folders: tuple[Path, Path], name: str) -> None:
    reference, resumed = ((folder / name).read_text() for folder in folders)
    assert resumed == reference
    assert len(reference.splitlines()) == 1 + (EPOCHS if name == "epochs.csv" else EPOCHS * 4)


def test_mlflow_holds_each_step_once(folders: tuple[Path, Path]) -> None:
    from mlflow.tracking import MlflowClient

    histories = []
    for folder in folders:
        client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
        histories.append(
            {
                key: sorted((p.step, p.value) for p in client.get_metric_history(run.info.run_id, key))
                for key in run.data.metrics
            }
        )
    reference, resumed = histories
    assert reference.keys() == resumed.keys() and "step/loss" in reference and "val_loss" in reference
    for key, points in reference.items():
        assert resumed[key] == points, key


def test_the_checkpoint_keeps_what_each_logger_had_written(folders: tuple[Path, Path]) -> None:
    saved = torch.load(folders[1] / "last.model", weights_only=True)
    assert saved["global_step"] == 2 * SAVE_AT  # the resumed run saved again at update 10
    states = saved["callbacks"]
    assert states["TensorBoard#0"]["current_step"] == 10 and states["TensorBoard#1"]["global_step"] == 10
    sizes = states["CSVLogger#0"]["sizes"]
    assert {os.path.basename(name) for name in sizes} == {"epochs.csv", "epochs_steps.csv"}
