"""Checkpoints never corrupt: a writer saving 4 MB checkpoints to one path with
`torchmanager_core.checkpoint.save` is SIGKILLed 30 times, each time at a point of a save drawn
with a fixed seed: inside the payload's write (at a random byte), before its fsync, before or
right after the rename. The writer stops at that point and waits for the kill, so the outcome is
the same on any machine. After each kill the file loads with `checkpoint.load` and holds exactly
the checkpoint the point calls for (the last whole one, or the renamed one); the partial temporary
files the kills leave are never taken for the checkpoint, by a glob of checkpoints nor by
`Experiment(resume=True)`, and the next whole save removes them.
"""

from __future__ import annotations

import os
import random
import signal
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


def kill_points(size: int) -> list[tuple[int, str]]:
    """(whole saves before the stop, stop point) for each kill: most inside the write, the others around the rename."""
    draw = random.Random(0)
    points = [f"write:{draw.randrange(1, size)}" for _ in range(KILLS - 12)] + ["fsync", "replace", "replaced"] * 4
    draw.shuffle(points)
    return [(draw.choice((0, 0, 1, 2)), point) for point in points]


@pytest.mark.slow
def test_kills_at_every_point_of_a_save_never_corrupt_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.model"
    checkpoint.save(payload(0), path)  # so that a file exists before the first kill; the smallest payload
    server = ForkServer(SCRIPT, tmp_path.parent / f"{tmp_path.name}-server.log")
    previous = 0
    try:
        for saves, point in kill_points(path.stat().st_size):
            before = temp_files(tmp_path)
            exit_code, lines = server.run(tmp_path, [str(path), str(previous + 1), str(saves), point], "paused")
            assert exit_code == -signal.SIGKILL and lines[-1] == "paused", f"see {server.log}"
            assert lines[:-1] == [f"saved {previous + 1 + i}" for i in range(saves)]

            loaded = checkpoint.load(path)  # complete: a corrupt or partial file raises CheckpointError
            expected = previous + saves + (point == "replaced")  # the rename done: the new one, else the last whole one
            assert loaded["counter"] == expected, (saves, point)
            assert_same(payload(expected), loaded)

            after = temp_files(tmp_path)
            assert before & after == (before if saves == 0 else set())  # a whole save removes earlier leftovers
            new = after - before
            assert len(new) == (point != "replaced"), (point, new)  # the interrupted save left its temporary file
            assert all(name.startswith(".last.model.") for name in new)  # hidden, and not named `*.model`
            if point.startswith("write:"):
                assert (tmp_path / new.pop()).stat().st_size == int(point.split(":")[1])  # killed inside the write
            previous = expected
    finally:
        server.close()

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
    assert len(resumed.history) == 2  # epoch 1 from the complete checkpoint, then epoch 2
    manager.fit(data, epochs=2)  # the run that was never interrupted
    assert resumed.history == manager.history
    for name, tensor in manager.raw_model.state_dict().items():
        assert torch.equal(resumed.raw_model.state_dict()[name], tensor)
    assert checkpoint.load(folder / "last.model")["epoch"] == 2
