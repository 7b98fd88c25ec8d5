"""`LastCheckpoint(..., background=True)` during `fit` (issue 22 point 5): the snapshot is the step's, the file is the
one a synchronous save writes, a failed write follows `on_checkpoint_error`, and a preemption waits for the write.

References: the same run with synchronous saves (the files compared value by value), the weights a callback
copied at the step, and the files read back. What a kill during a background write leaves is tested on the
writer itself (tests/test_background_checkpoints.py): `fit` writes through the same writer.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from torchmanager import Manager
from torchmanager.callbacks import Callback, LastCheckpoint
from torchmanager_core import checkpoint
from torchmanager_core.errors import Preempted


def manager(seed: int = 0) -> Manager[Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    return Manager(model, optimizer, torch.nn.CrossEntropyLoss())


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(80, 4, generator=generator), torch.randint(0, 3, (80,), generator=generator)
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 80, 8)]


class Weights(Callback):
    """Copies the weights after each update (what a checkpoint of that step must hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        state = self.manager.raw_model.state_dict()
        self.by_step[self.manager.global_step] = {name: value.clone() for name, value in state.items()}


def same_payload(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        skip = {"torchmanager_version"}
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_payload(a[k], b[k]) for k in a if k not in skip)
        )
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_payload, a, b))
    return bool(a == b)


def test_background_saves_write_the_synchronous_files_with_each_steps_snapshot(tmp_path: Path) -> None:
    """Every 3 updates, 2 epochs of 10: each background file, read when the next save starts (a callback after
    it), holds the weights of its step although training went on; the last equals the synchronous run's file."""
    files = {}
    for background in (False, True):
        run, weights = manager(), Weights()
        path = tmp_path / f"{background}.model"
        last = LastCheckpoint(run, str(path), save_every_n_steps=3, background=background)
        run.fit(data(), epochs=2, callbacks_list=[weights, last], show_verbose=False)
        files[background] = checkpoint.load(path)
        saved = files[background]
        assert saved["global_step"] == 20 and same_payload(saved["model"], weights.by_step[20])
    assert same_payload(files[False], files[True])


def test_each_background_file_holds_its_steps_weights(tmp_path: Path) -> None:
    """A background save after update 4 to its own path, then training goes on: the file holds update 4's weights."""

    class SaveAt4(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if self.manager.global_step == 4 and batch == 3:
                self.manager.save_checkpoint(tmp_path / "four.model", background=True)

    run, weights = manager(), Weights()
    run.fit(data(), epochs=1, callbacks_list=[weights, SaveAt4()], show_verbose=False)
    saved = checkpoint.load(tmp_path / "four.model")
    assert saved["global_step"] == 4 and same_payload(saved["model"], weights.by_step[4])
    assert not same_payload(saved["model"], weights.by_step[10])


class BlockPath(Callback):
    """Puts a folder where the checkpoint file goes when training starts: every write of it fails (the rename)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_train_start(self, initial_epoch: int = 0) -> None:
        self.path.mkdir()


def test_a_failed_background_write_raises_or_is_logged_as_the_policy_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "last.model"
    run = manager()
    last = LastCheckpoint(run, str(path), save_every_n_steps=4, background=True)
    with pytest.raises(
        checkpoint.CheckpointWriteError, match=r"Cannot save checkpoint `.*last.model`: writing it failed"
    ):
        run.fit(data(), epochs=1, callbacks_list=[BlockPath(path), last], show_verbose=False)
    assert run.global_step in (8, 10)  # raised at the next save (update 8) or when the run ended
    os.rmdir(path)
    run = manager()
    last = LastCheckpoint(run, str(path), save_every_n_steps=4, background=True)
    with caplog.at_level(logging.ERROR, logger="torchmanager"):
        run.fit(data(), epochs=2, callbacks_list=[BlockPath(path), last], on_checkpoint_error="continue")
    assert run.global_step == 20
    assert (
        "Checkpoint not saved, training goes on (on_checkpoint_error='continue'): Cannot save checkpoint" in caplog.text
    )


def test_a_preemption_waits_for_the_background_write_and_saves_its_step(tmp_path: Path) -> None:
    """SIGTERM after update 7 with a background save every 2 updates: the preemption's save (of update 7) follows the
    background one of update 6 and is on disk when `Preempted` reaches the script."""

    class Terminate(Callback):
        def on_batch_end(self, batch: int, summary: Any = None) -> None:
            if self.manager.global_step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    path = tmp_path / "last.model"
    run, weights = manager(), Weights()
    last = LastCheckpoint(run, str(path), save_every_n_steps=2, background=True)
    with pytest.raises(Preempted):
        run.fit(data(), epochs=2, callbacks_list=[weights, last, Terminate()], show_verbose=False)
    saved = checkpoint.load(path)
    assert saved["global_step"] == 7 and same_payload(saved["model"], weights.by_step[7])


def test_background_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"`background` must be True or False. Received: background='yes'"):
        LastCheckpoint(None, str(tmp_path / "last.model"), background="yes")  # type: ignore[arg-type]
