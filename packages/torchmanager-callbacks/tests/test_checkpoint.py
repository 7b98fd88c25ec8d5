"""LastCheckpoint and BestCheckpoint: when they save, what the file holds, and bad input."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from cb_testkit import FakeManager, batches, blobs, make_manager

from torchmanager_callbacks import BestCheckpoint, Checkpoint, LastCheckpoint, MonitorError, MonitorType
from torchmanager_core import checkpoint
from torchmanager_core.callbacks import CallbackList


def run_epochs(callback: Any, manager: FakeManager, values: list[float], key: str = "accuracy") -> None:
    loop = CallbackList([callback])
    loop.on_train_start(0)
    for epoch, value in enumerate(values):
        manager.raw_model.weight.data.fill_(float(epoch))  # the weights identify the epoch
        loop.on_epoch_end(epoch, {"loss": 1.0, key: value}, None)


@pytest.mark.parametrize(("freq", "saved_after"), [(1, [1, 2, 3, 4, 5, 6]), (2, [2, 4, 6]), (4, [4])])
def test_last_checkpoint_saves_every_freq_epochs(tmp_path: Any, freq: int, saved_after: list[int]) -> None:
    manager = FakeManager()
    callback = LastCheckpoint(manager, str(tmp_path / "last.model"), freq)
    saves: list[int] = []
    for epoch in range(6):
        before = len(manager.saved)
        callback.on_epoch_end(epoch, {"loss": 1.0})
        if len(manager.saved) > before:
            saves.append(epoch + 1)
    # upstream saved when `epoch % freq == 0` (epochs 1, 3, 5 for freq=2): never the last of an even run
    assert saves == saved_after
    assert Checkpoint is LastCheckpoint


class RecordingLast(LastCheckpoint):
    """A LastCheckpoint that notes the batch and optimizer step of each save it asks for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[int, int]] = []

    def _save(self) -> None:
        self.asked.append((self.manager.batch_index, self.manager.global_step))
        super()._save()


@pytest.mark.parametrize("accumulate", [1, 2, 3])
def test_step_checkpoints_count_optimizer_updates(tmp_path: Any, accumulate: int) -> None:
    manager = make_manager()
    manager.accumulate_grad_batches = accumulate
    path = tmp_path / "last.model"
    callback = RecordingLast(None, str(path), freq=100, save_every_n_steps=2)
    data = batches(*blobs(80), size=8)  # 10 batches an epoch
    manager.fit(data, epochs=2, callbacks_list=[callback])
    # hand count: windows of `accumulate` batches, the epoch's last one shorter; a save after every 2nd update
    updates, expected = 0, []
    for _epoch in range(2):
        for batch in range(10):
            if (batch + 1) % accumulate == 0 or batch == 9:
                updates += 1
                if updates % 2 == 0:
                    expected.append((batch + 1, updates))
    assert callback.asked == expected
    saved = torch.load(path, weights_only=True)
    assert (saved["epoch"], saved["step"], saved["global_step"]) == (1, expected[-1][0], expected[-1][1])


def test_last_checkpoint_of_a_real_fit_resumes_it(tmp_path: Any) -> None:
    data = batches(*blobs(40), size=16)
    path = str(tmp_path / "last.model")
    manager = make_manager()
    manager.fit(data, epochs=2, callbacks_list=[LastCheckpoint(manager, path)])
    assert torch.load(path, weights_only=True)["epoch"] == 2
    reference = make_manager()
    reference.fit(data, epochs=3)
    resumed = make_manager(seed=5)
    resumed.fit(data, epochs=3, resume_from=path)
    assert torch.equal(resumed.raw_model.weight, reference.raw_model.weight)


def test_best_checkpoint_keeps_the_best_epoch(tmp_path: Any) -> None:
    manager = FakeManager()
    best = BestCheckpoint("accuracy", manager, str(tmp_path / "best.model"))
    manager.callbacks = CallbackList([best])
    run_epochs(best, manager, [0.2, 0.7, 0.5, 0.7, 0.6])
    saved = checkpoint.load(tmp_path / "best.model")
    assert torch.all(saved["model"]["weight"] == 1.0)  # epoch 1; the tie at epoch 3 is not an improvement
    assert best.best_score == 0.7 and manager.saved == [best.ckpt_path] * 2
    assert saved["callbacks"]["BestCheckpoint#0"]["best"] == 0.7


def test_best_checkpoint_min_and_values_below_minus_one(tmp_path: Any) -> None:
    manager = FakeManager()
    best = BestCheckpoint("score", manager, str(tmp_path / "best.model"), monitor_type=MonitorType.MAX)
    run_epochs(best, manager, [-3.0, -2.0, -2.5], key="score")
    # upstream started MAX at -1 and never saved a score below it
    assert len(manager.saved) == 2 and best.best_score == -2.0
    low = BestCheckpoint("loss", FakeManager(), str(tmp_path / "low.model"), monitor_type=MonitorType.MIN)
    for epoch, value in enumerate([0.5, 0.3, 0.4]):
        low.on_epoch_end(epoch, {"loss": value})
    assert low.best_score == 0.3


def test_best_checkpoint_uses_validation_and_loads_best(tmp_path: Any) -> None:
    manager = FakeManager()
    best = BestCheckpoint("accuracy", manager, str(tmp_path / "best.model"), load_best=True)
    for epoch, (train, val) in enumerate([(0.9, 0.4), (0.95, 0.6), (0.99, 0.5)]):
        manager.raw_model.weight.data.fill_(float(epoch))
        best.on_epoch_end(epoch, {"accuracy": train}, {"accuracy": val})
    assert best.best_score == 0.6 and best.best_summary == {"accuracy": 0.95, "val_accuracy": 0.6}
    best.on_train_end(manager.raw_model)
    assert torch.all(manager.raw_model.weight == 1.0)


def test_best_state_survives_a_resume(tmp_path: Any) -> None:
    manager = FakeManager()
    best = BestCheckpoint("accuracy", manager, str(tmp_path / "best.model"))
    manager.callbacks = CallbackList([best])
    run_epochs(best, manager, [0.8])
    again = BestCheckpoint("accuracy", FakeManager(), str(tmp_path / "best.model"))
    again.on_load_checkpoint(checkpoint.load(tmp_path / "best.model"))
    again.on_epoch_end(1, {"accuracy": 0.7})
    assert again.best_score == 0.8 and again.manager.saved == []  # a fresh one would have saved 0.7


def test_missing_monitor_fails_at_the_first_epoch_end(tmp_path: Any) -> None:
    manager = make_manager()
    best = BestCheckpoint("acc", manager, str(tmp_path / "best.model"))
    with pytest.raises(
        MonitorError,
        match=r"Monitor `acc` is not in the epoch summary; monitor one of `loss`, `accuracy`, `lr`. Received: monitor='acc'",
    ):
        manager.fit(batches(*blobs(16), size=8), epochs=3, callbacks_list=[best])
    assert manager.current_epoch == 1


def test_unwritable_folder_fails_at_construction(tmp_path: Any) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    path = str(blocker / "ckpt" / "last.model")
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"`ckpt_path` must be in a folder that can be created and written, but .* cannot .*; choose another path. Received: ckpt_path=",
    ):
        LastCheckpoint(FakeManager(), path)
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"`ckpt_path` must be the path of a file, not of a folder. Received: ckpt_path=",
    ):
        BestCheckpoint("accuracy", FakeManager(), str(tmp_path))
    made = LastCheckpoint(FakeManager(), str(tmp_path / "new" / "folder" / "last.model"))
    assert os.path.isdir(tmp_path / "new" / "folder") and made.ckpt_path.endswith("last.model")


def test_bad_arguments(tmp_path: Any) -> None:
    with pytest.raises(
        TypeError,
        match=r"`manager` must be a torchmanager Manager \(an object with `save_checkpoint\(path\)`\), or None for the manager whose `fit` runs the callback. Received: manager=Linear",
    ):
        LastCheckpoint(torch.nn.Linear(1, 1), str(tmp_path / "l.model"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`freq` must be an int >= 1. Received: freq=0"):
        LastCheckpoint(FakeManager(), str(tmp_path / "l.model"), 0)
    with pytest.raises(
        TypeError,
        match=r"`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None \(from the monitor.s name\). Received: monitor_type='min'",
    ):
        BestCheckpoint("loss", FakeManager(), str(tmp_path / "b.model"), monitor_type="min")  # type: ignore[arg-type]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = FakeManager()
    callback = LastCheckpoint(manager, str(tmp_path / "last.model"))
    manager.raw_model.weight.data.fill_(1.0)
    callback.on_epoch_end(0)
    before = (tmp_path / "last.model").read_bytes()

    def broken_save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    manager.raw_model.weight.data.fill_(2.0)
    with pytest.raises(OSError, match="disk full"):
        callback.on_epoch_end(1)
    monkeypatch.undo()
    assert (tmp_path / "last.model").read_bytes() == before
    assert torch.all(checkpoint.load(tmp_path / "last.model")["model"]["weight"] == 1.0)
    assert sorted(os.listdir(tmp_path)) == ["last.model"]  # no temporary file left


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_save_top_k_keeps_the_k_best_epochs_and_the_same_set_after_a_resume(tmp_path: Any, monitor: str) -> None:

    train, val = batches(*blobs(32), size=8), batches(*blobs(16, seed=1), size=8)

    def fit(folder: str, epochs: int, resume: bool = False) -> tuple[Any, BestCheckpoint]:
        manager = make_manager(lr=0.3)
        best = BestCheckpoint(monitor, manager, os.path.join(folder, "best.model"), save_top_k=3, load_best=True)
        last = LastCheckpoint(manager, os.path.join(folder, "last.model"))
        resume_from = os.path.join(folder, "last.model") if resume else None
        manager.fit(train, epochs=epochs, val_dataset=val, callbacks_list=[best, last], resume_from=resume_from)
        return manager, best

    whole = str(tmp_path / "whole")
    manager, best = fit(whole, 7)
    values = [summary[monitor] for summary in manager.history]
    order = sorted(range(7), key=lambda e: values[e] if monitor == "val_loss" else -values[e])  # stable: ties
    expected = [f"best-epoch{e + 1}.model" for e in order[:3]]  # by hand: the three best epochs, best first
    assert [os.path.basename(path) for path in best.top_k] == expected
    assert sorted(n for n in os.listdir(whole) if n.startswith("best")) == sorted(expected)  # the others deleted
    for e in order[:3]:
        saved = checkpoint.load(os.path.join(whole, f"best-epoch{e + 1}.model"))
        assert saved["epoch"] == e + 1 and saved["history"][-1][monitor] == values[e]
    best_weights = checkpoint.load(best.best_ckpt_path)["model"]  # load_best: the best file's weights at the end
    assert torch.equal(manager.raw_model.weight, best_weights["weight"])

    split = str(tmp_path / "split")
    fit(split, 3)
    _, resumed = fit(split, 7, resume=True)
    assert resumed.top_k == [os.path.join(split, name) for name in expected]
    assert sorted(n for n in os.listdir(split) if n.startswith("best")) == sorted(expected)
    with pytest.raises(ValueError, match=r"`save_top_k` must be an int >= 1. Received: save_top_k=0"):
        BestCheckpoint("loss", FakeManager(), str(tmp_path / "b.model"), save_top_k=0)
