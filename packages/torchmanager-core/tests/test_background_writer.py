"""`checkpoint.BackgroundWriter`: the file holds the payload as it was when submitted, writes happen one at a
time, and every error reaches the caller once (at once for a bad payload, at the next call for a failed write).

References: copies of the payload taken before it was submitted, `checkpoint.load` of the file, and the
error `checkpoint.save` raises for the same payload.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from torchmanager_core import checkpoint


def payload(value: float) -> dict[str, Any]:
    weight = torch.full((64, 64), value)
    return {
        "model": {"weight": weight, "bias": torch.arange(4.0) + value},
        "tied": weight,  # the same tensor twice: stored once, loaded shared
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 2,
        "names": ("a", "b"),
    }


def test_the_file_holds_the_payload_as_it_was_when_submitted(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    state = payload(1.0)
    expected = {"weight": state["model"]["weight"].clone(), "bias": state["model"]["bias"].clone()}
    with checkpoint.BackgroundWriter() as writer:
        writer.submit(state, path)
        state["model"]["weight"].add_(5)  # training changes the originals at once
        state["model"]["bias"].mul_(0)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["model"]["weight"], expected["weight"])
    assert torch.equal(loaded["model"]["bias"], expected["bias"])
    assert loaded["tied"].data_ptr() == loaded["model"]["weight"].data_ptr()  # still one tensor
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}] and loaded["names"] == ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["last.model"]  # no temporary file left


def test_the_next_save_waits_for_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    started, release = threading.Event(), threading.Event()
    real_fsync, real_replace = os.fsync, os.replace
    renamed: list[float] = []

    def slow_fsync(fd: int) -> None:
        if not started.is_set():  # the first write's file: hold it until released
            started.set()
            release.wait(30)
        real_fsync(fd)

    def replace(source: str, target: str) -> None:
        renamed.append(float(torch.load(source, weights_only=True)["model"]["bias"][0]))
        real_replace(source, target)

    writer = checkpoint.BackgroundWriter()
    with mock.patch.object(os, "fsync", slow_fsync), mock.patch.object(os, "replace", replace):
        writer.submit(payload(1.0), path)
        assert started.wait(30) and writer.pending
        second = threading.Thread(target=writer.submit, args=(payload(2.0), path))
        second.start()
        second.join(0.2)
        assert second.is_alive() and renamed == []  # the second submit waits for the first write
        release.set()
        second.join(30)
        writer.close()
    assert renamed == [1.0, 2.0] and float(checkpoint.load(path)["model"]["bias"][0]) == 2.0


def test_a_failed_write_is_raised_once_at_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    checkpoint.save(payload(0.0), path)

    def full_disk(fd: int) -> None:  # the file system reports the full disk when the file is synced
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = checkpoint.BackgroundWriter()
    with mock.patch.object(os, "fsync", full_disk):
        writer.submit(payload(1.0), path)  # returns: the write fails in the background
        with pytest.raises(checkpoint.CheckpointWriteError, match=r"No space left on device.*previous checkpoint") as e:
            writer.wait()
    assert e.value.errno == errno.ENOSPC
    writer.wait()  # reported once
    assert float(checkpoint.load(path)["model"]["bias"][0]) == 0.0  # the previous file is intact

    with mock.patch.object(os, "fsync", full_disk):
        writer.submit(payload(1.0), path)
        writer._join()  # type: ignore[attr-defined]  # the write has failed
    with pytest.raises(checkpoint.CheckpointWriteError):
        writer.submit(payload(2.0), path)  # the previous write's error; this one was started all the same
    writer.close()
    assert float(checkpoint.load(path)["model"]["bias"][0]) == 2.0


def test_a_bad_payload_or_folder_is_refused_at_once_as_save_refuses_it(tmp_path: Path) -> None:
    writer = checkpoint.BackgroundWriter()
    bad = {"model": torch.nn.Linear(2, 2)}
    with pytest.raises(TypeError) as from_save:
        checkpoint.save(bad, tmp_path / "a.model")
    with pytest.raises(TypeError, match=r"Received: payload\['model'\]=Linear") as from_writer:
        writer.submit(bad, tmp_path / "a.model")
    assert str(from_writer.value) == str(from_save.value)
    with pytest.raises(checkpoint.CheckpointError, match=r"its folder .* does not exist"):
        writer.submit(payload(1.0), tmp_path / "missing" / "a.model")
    assert not writer.pending and list(tmp_path.iterdir()) == []
