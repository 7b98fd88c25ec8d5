"""TensorBoard (event files read back) and CSVLogger (rows read back), against the fit's own summaries."""

from __future__ import annotations

import csv
import os
import sys
from typing import Any

import pytest
from cb_testkit import batches, blobs, make_manager
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchmanager_callbacks import CSVLogger, Frequency, LambdaCallback, TensorBoard


def scalars(log_dir: str, tag: str, line: str) -> list[tuple[int, float]]:
    events = EventAccumulator(os.path.join(log_dir, f"{tag}_{line}"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_records_every_train_and_val_value(tmp_path: Any) -> None:
    summaries: list[dict[str, float]] = []
    log_dir = str(tmp_path / "logs")
    data = batches(*blobs(24), size=8)
    make_manager().fit(
        data,
        epochs=3,
        val_dataset=data,
        callbacks_list=[TensorBoard(log_dir), LambdaCallback(post_fn=lambda e, s: summaries.append(s))],
    )
    for tag in ("loss", "accuracy"):
        assert scalars(log_dir, tag, "train") == [
            (e + 1, pytest.approx(s[tag], rel=1e-6)) for e, s in enumerate(summaries)
        ]
        assert scalars(log_dir, tag, "val") == [
            (e + 1, pytest.approx(s[f"val_{tag}"], rel=1e-6)) for e, s in enumerate(summaries)
        ]


def test_tensorboard_batch_frequency_records_each_step(tmp_path: Any) -> None:
    losses: list[float] = []
    log_dir = str(tmp_path / "logs")
    record = LambdaCallback(post_fn=lambda b, s: losses.append(float(s["loss"])), freq=Frequency.BATCH)
    make_manager().fit(
        batches(*blobs(24), size=8),
        epochs=2,
        callbacks_list=[TensorBoard(log_dir, Frequency.BATCH, initial_step=5), record],
    )
    assert scalars(log_dir, "loss", "train") == [(6 + i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(losses)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace, used by add_graph
def test_add_graph(tmp_path: Any) -> None:
    board = TensorBoard(str(tmp_path / "logs"))
    board.add_graph(make_manager().raw_model, (2, 4))
    board.close()
    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    assert events.Graph() is not None


def test_missing_tensorboard_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(
        ImportError,
        match=r'need the tensorboard package, which is not installed; install it with `pip install "torchmanager-callbacks\[tensorboard\]"`',
    ):
        TensorBoard(str(tmp_path / "logs"))


def test_csv_logger_writes_one_row_an_epoch(tmp_path: Any) -> None:
    summaries: list[dict[str, float]] = []
    path = tmp_path / "out" / "log.csv"
    data = batches(*blobs(24), size=8)
    manager = make_manager()
    watch = LambdaCallback(post_fn=lambda e, s: summaries.append(s))
    manager.fit(data, epochs=2, val_dataset=data, callbacks_list=[CSVLogger(str(path)), watch])
    manager.fit(data, epochs=3, val_dataset=data, callbacks_list=[CSVLogger(str(path), append=True), watch])
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    for row, summary in zip(rows, summaries):
        assert {key: float(value) for key, value in row.items() if key != "epoch"} == summary
    with pytest.raises(ValueError, match=r"`separator` must be one character. Received: separator=';;'"):
        CSVLogger(str(path), separator=";;")
