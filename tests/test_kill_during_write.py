"""Checkpoints never corrupt: a writer saving 4 MB checkpoints in a loop to one path with
`torchmanager_core.checkpoint.save` is SIGKILLed at 30 random moments (most of them inside a write).
After each kill the file loads with `checkpoint.load` and holds one complete checkpoint the writer
wrote, never an older one than before; the partial temporary files the kills leave are never taken
for the checkpoint, by a glob of checkpoints nor by `Experiment(resume=True)`.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import torchmanager
from tests.scripts.checkpoint_writer import payload
from tests.scripts.fork_server import ForkServer
from tests.workspace import ROOT
from torchmanager_core import checkpoint

SCRIPT = ROOT / "tests" / "scripts" / "checkpoint_writer.py"
KILLS = 30


def temp_files(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name.endswith(".tmp")}


def assert_same(expected: Any, actual: Any, where: str = "payload") -> None:
    """Equal values, and bit-identical tensors, in nested dicts and lists."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(expected) <= set(actual), where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(expected) == len(actual), where
        for index, (a, b) in enumerate(zip(expected, actual)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


@pytest.mark.slow
def test_kills_at_random_moments_never_corrupt_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    checkpoint.save(payload(0), path)  # so that a file exists before the first kill
    server = ForkServer(SCRIPT, tmp_path.parent / f"{tmp_path.name}-server.log")
    moments = random.Random(0)
    previous, mid_write, saves, pending = 0, 0, 0, 0
    try:
        for _ in range(KILLS):
            before = temp_files(tmp_path)
            pid = server.start(tmp_path, [str(path), str(previous + 1)])
            time.sleep(moments.uniform(0.0, 0.08))
            os.kill(pid, signal.SIGKILL)
            saved = [int(line.split()[1]) for line in server.lines(pid) if line.startswith("saved ")]
            assert server.exit_code == -signal.SIGKILL, f"see {server.log}"

            loaded = checkpoint.load(path)  # complete: a corrupt or partial file raises CheckpointError
            counter = loaded["counter"]
            reported = saved[-1] if saved else previous
            # the last save the writer reported, or the next one if the kill came between its rename and its print
            assert counter in (reported, reported + 1), (counter, saved, previous)
            assert_same(payload(counter), loaded)
            interrupted = bool(temp_files(tmp_path) - before)  # the kill interrupted a write and left its partial file
            mid_write += interrupted
            # a completed save removes the partial files of earlier killed writes
            pending = int(interrupted) + (0 if counter > previous else pending)
            saves += counter - previous
            previous = counter
    finally:
        server.close()

    print(f"{KILLS} kills, {KILLS} survived, {mid_write} inside a write, {saves} checkpoints completed in between")
    assert mid_write >= KILLS // 3, "the kills should mostly land inside a write; were the writes too fast?"
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == pending < mid_write  # only those of the kills since the last completed save
    assert all(name.startswith(".last.model.") for name in leftovers)  # hidden, and not named `*.model`
    assert sorted(path.name for path in tmp_path.glob("*.model")) == ["last.model"]


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def make_manager(seed: int) -> torchmanager.Manager:
    torch.manual_seed(seed)
    model = Linear()
    return torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )


def test_a_partial_file_from_a_killed_save_is_not_taken_for_the_experiment_checkpoint(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 4, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(4)]
    manager = make_manager(0)
    manager.fit(data, epochs=1, callbacks_list=[torchmanager.callbacks.Experiment("run", manager, root=str(tmp_path))])
    folder = tmp_path / "run.exp" / "checkpoints"
    last = (folder / "last.model").read_bytes()
    # what a SIGKILL inside the next save leaves: the same name `checkpoint.save` gives its temporary file
    (folder / ".last.model.k1ll3d.tmp").write_bytes(last[: len(last) // 2])

    resumed = make_manager(1)
    experiment = torchmanager.callbacks.Experiment("run", resumed, resume=True, root=str(tmp_path))
    assert experiment.resume_checkpoint() == str(folder / "last.model")
    resumed.fit(data, epochs=2, callbacks_list=[experiment])
    assert len(resumed.history) == 1  # epoch 2 only: it went on from the complete checkpoint of epoch 1
    manager.fit(data, epochs=2)  # the run that was never interrupted
    for name, tensor in manager.raw_model.state_dict().items():
        assert torch.equal(resumed.raw_model.state_dict()[name], tensor)
    assert checkpoint.load(folder / "last.model")["epoch"] == 2
