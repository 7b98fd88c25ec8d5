"""The progress bar draws on its own clock alone, so what it shows does not depend on machine load.

Each test gives the bar a scripted clock and makes tqdm's own clock jump by a minute at every
reading (what a loaded machine looks like to tqdm's redraw timer): the draws must be exactly those
the scripted clock calls for, worked out by hand.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest
import torch
import tqdm.std
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Manager
from torchmanager_core.progress import EpochProgress, ProgressBar, VerboseType


@pytest.fixture(autouse=True)
def loaded_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm's clock advances 60 s at every reading: its own timer would redraw at every step."""
    minutes = itertools.count(0.0, 60.0)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(minutes))


def scripted(times: list[float]) -> Callable[[], float]:
    readings: Iterator[float] = iter(times)
    return lambda: next(readings)


def drawn_steps(err: str, total: int) -> list[int]:
    """The step counts of every draw of a bar over `total` steps, in order."""
    return [int(n) for n in re.findall(rf"(\d+)/{total} \[", err)]


def test_the_bar_draws_when_its_clock_says_and_the_last_step_at_close(capsys: pytest.CaptureFixture[str]) -> None:
    # clock read when the bar opens (0.0), then after each of steps 1-5 (step 6 is the last: not read)
    bar = EpochProgress(6, "Epoch 1/1", True, refresh_s=1.0, clock=scripted([0.0, 0.4, 1.0, 1.5, 1.9, 3.2]))
    reads: list[int] = []
    for step in range(1, 7):
        bar.step(lambda step=step: reads.append(step) or {"loss": float(step)})
    bar.close({"loss": 0.5})
    err = capsys.readouterr().err
    # 1.0 - 0.0 >= 1 at step 2; 1.5 and 1.9 are < 1 after 1.0; 3.2 - 1.0 >= 1 at step 5
    assert reads == [2, 5]
    assert drawn_steps(err, 6) == [0, 2, 5, 6]  # open, steps 2 and 5, close
    assert "loss=2" in err and "loss=5" in err and "loss=0.5" in err


def test_a_bar_of_unknown_length_draws_every_step_the_clock_allows(capsys: pytest.CaptureFixture[str]) -> None:
    bar = EpochProgress(None, "Test", True, refresh_s=0.0, clock=scripted([0.0] * 4))
    for _ in range(3):
        bar.step(dict)
    bar.close()
    assert re.findall(r"Test: (\d+)it", capsys.readouterr().err) == ["0", "1", "2", "3", "3"]


def test_a_disabled_bar_draws_and_reads_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = EpochProgress(3, "Epoch 1/1", False, refresh_s=0.0, clock=scripted([]))  # reading the clock would raise
    assert not bar.enabled
    bar.step(lambda: pytest.fail("read"))
    bar.close({"loss": 1.0})
    assert capsys.readouterr().err == ""


def test_the_upstream_progress_bar_callback_draws_the_same_on_any_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """3 steps an epoch, 2 epochs, refresh_s=0: each epoch draws steps 0, 1 and 2, then 3 at its end (after validation)."""
    x, y = blobs(24)
    bar = ProgressBar(3, verbose_type=VerboseType.METRICS, refresh_s=0.0, clock=lambda: 0.0)
    model = linear()
    manager = Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), {"accuracy": Accuracy()}
    )
    manager.fit(batches(x, y, 8), epochs=2, val_dataset=batches(x, y, 8), callbacks_list=[bar])
    err = capsys.readouterr().err
    assert drawn_steps(err, 3) == [0, 1, 2, 3] * 2
    finals = [line for line in re.split(r"[\r\n]", err) if "3/3 [" in line]
    assert len(finals) == 2 and all("accuracy=" in line and "val_accuracy=" in line for line in finals)
    assert "loss=" not in err  # METRICS: the losses are left out
