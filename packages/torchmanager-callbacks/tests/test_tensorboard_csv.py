"""TensorBoard (event files read back) and CSVLogger (rows read back), against the fit's own summaries."""

from __future__ import annotations

import csv
import os
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F
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
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]  # counted from 1, as the log
    for row, summary in zip(rows, summaries):
        assert {key: float(value) for key, value in row.items() if key != "epoch"} == summary
    with pytest.raises(ValueError, match=r"`separator` must be one character. Received: separator=';;'"):
        CSVLogger(str(path), separator=";;")


def hand_batch_losses(data: list[Any], epochs: int, window: int, lr: float = 0.1) -> list[tuple[int, int, float]]:
    """(global step, batch index, that batch's loss) for each batch ending an optimizer update, by hand."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    points, step = [], 0
    for _ in range(epochs):
        for start in range(0, len(data), window):
            part = data[start : start + window]
            optimizer.zero_grad()
            for offset, (x, y) in enumerate(part):
                loss = F.cross_entropy(model(x), y)
                (loss / len(part)).backward()
                last = (start + offset, loss.item())
            optimizer.step()
            step += 1
            points.append((step, *last))
    return points


@pytest.mark.parametrize(("window", "every"), [(1, 3), (2, 2), (3, 1)])
def test_per_step_points_every_n_optimizer_updates_beside_the_epoch_ones(
    tmp_path: Any, window: int, every: int
) -> None:
    data = batches(*blobs(56), size=8)  # 7 batches an epoch
    manager = make_manager()
    manager.accumulate_grad_batches = window
    log_dir, csv_path = str(tmp_path / "tb"), tmp_path / "log.csv"
    board = TensorBoard(log_dir, log_every_n_steps=every)
    manager.fit(data, epochs=2, callbacks_list=[board, CSVLogger(str(csv_path), log_every_n_steps=every)])
    board.close()
    expected = [(step, batch, loss) for step, batch, loss in hand_batch_losses(data, 2, window) if step % every == 0]
    events = EventAccumulator(log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("step/loss")] == [
        (step, pytest.approx(loss, rel=1e-5)) for step, _, loss in expected
    ]
    with open(tmp_path / "log_steps.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["step"]), int(r["batch"]), float(r["loss"])) for r in rows] == [
        (step, batch, pytest.approx(loss, rel=1e-5)) for step, batch, loss in expected
    ]
    assert [int(r["epoch"]) for r in rows] == [
        1 if step <= -(-7 // window) else 2 for step, _, _ in expected
    ]  # counted from 1
    with open(csv_path, newline="") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [1, 2]  # the per-epoch rows are still there
    assert scalars(log_dir, "loss", "train")[-1][0] == 2


def test_per_step_logging_is_off_by_default_and_costs_no_batch_hook(tmp_path: Any) -> None:
    assert "on_batch_end" in TensorBoard(str(tmp_path / "tb")).unused_hooks
    assert "on_batch_end" in CSVLogger(str(tmp_path / "a.csv")).unused_hooks
    assert "on_batch_end" not in CSVLogger(str(tmp_path / "b.csv"), log_every_n_steps=5).unused_hooks
    with pytest.raises(
        ValueError,
        match=r"`log_every_n_steps` must be a positive int, or None for no per-step metrics. Received: log_every_n_steps=0",
    ):
        CSVLogger(str(tmp_path / "c.csv"), log_every_n_steps=0)
