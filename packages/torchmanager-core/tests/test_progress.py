"""The progress bar draws on its own clock alone, so what it shows does not depend on machine load.

Each test gives the bar a scripted clock and makes tqdm's own clock jump by a minute at every
reading (what a loaded machine looks like to tqdm's redraw timer): the draws must be exactly those
the scripted clock calls for, worked out by hand.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import tqdm.std
from core_testkit import Accuracy, batches, blobs, linear

from torchmanager_core import Manager
from torchmanager_core.progress import (
    EpochProgress,
    ProgressBar,
    RunEta,
    VerboseType,
    format_duration,
    logger,
    wants_progress,
)


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


@pytest.mark.parametrize(
    ("tty", "environment", "expected"),
    [(True, {}, True), (False, {}, False), (True, {"CI": "true"}, False), (True, {"GITHUB_ACTIONS": "true"}, False)],
)
def test_auto_draws_bars_in_an_interactive_terminal_only(
    monkeypatch: pytest.MonkeyPatch, tty: bool, environment: dict[str, str], expected: bool
) -> None:
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert wants_progress("auto") is expected
    assert wants_progress(True) and not wants_progress(False)
    with pytest.raises(TypeError, match=r'`show_verbose` must be True, False or "auto". Received: show_verbose=1'):
        wants_progress(1)  # type: ignore[arg-type]


def test_the_run_eta_is_the_mean_step_time_times_the_steps_left() -> None:
    eta = RunEta(10, done=2, clock=scripted([100.0, 103.0, 106.0]))  # a resumed run: 2 steps were made before
    assert eta.left_s() is None  # no step made yet: no pace
    eta.step()
    eta.step()  # 2 steps in 3 s: 1.5 s a step, 6 steps left
    assert eta.left_s() == pytest.approx(9.0)
    assert RunEta(None).left_s() is None
    assert [format_duration(s) for s in (9.4, 187, 3720)] == ["9s", "3m07s", "1h02m"]


def test_fit_shows_one_line_an_epoch_with_validation_and_logs_it_once(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    caplog.set_level(logging.INFO, logger="torchmanager")
    x, y = blobs(24)
    model = linear()
    manager = Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), {"accuracy": Accuracy()}
    )
    log_file = logging.FileHandler(tmp_path / "run.log")
    logger.addHandler(log_file)
    try:
        manager.fit(batches(x, y, 8), epochs=2, val_dataset=batches(x, y, 8), show_verbose=True)
    finally:
        logger.removeHandler(log_file)
        log_file.close()
    captured = capsys.readouterr()
    finals = [line for line in re.split(r"[\r\n]", captured.err) if "3/3 [" in line]
    assert len(finals) == 2  # one line an epoch: no validation bar, no second line
    for epoch, line in enumerate(finals, 1):
        assert line.startswith(f"Epoch {epoch}/2") and all(
            f"{key}=" in line for key in ("loss", "accuracy", "lr", "val_loss", "val_accuracy")
        )
    assert "(run: 0s left)" in finals[1]  # the whole run's time left: none after the last step
    assert "Validation" not in captured.err
    assert "Epoch 1/2:" not in captured.out  # the bar showed it: the console does not repeat it ...
    assert (tmp_path / "run.log").read_text().count("Epoch 1/2: loss=") == 1  # ... a log file still gets it


def test_by_default_tests_and_log_files_get_no_bars(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="torchmanager")
    x, y = blobs(16)
    model = linear()
    Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss()).fit(
        batches(x, y, 8), epochs=1
    )
    captured = capsys.readouterr()  # pytest's captured stderr is not a terminal: "auto" draws nothing
    assert "it/s" not in captured.err and "2/2 [" not in captured.err
    assert "Epoch 1/1: loss=" in captured.out


class _Kernel:
    """What `get_ipython()` returns in a Jupyter kernel (IPython in a terminal has no IPKernelApp)."""

    def __init__(self, kernel: bool) -> None:
        self.config = {"IPKernelApp": {}} if kernel else {}


@pytest.mark.parametrize("kernel", [True, False], ids=["jupyter-kernel", "ipython-terminal"])
def test_a_notebook_gets_tqdm_auto_s_bar_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kernel: bool
) -> None:
    made: list[str] = []

    class Auto(tqdm.std.tqdm):  # type: ignore[type-arg]
        """Stands for tqdm.auto's choice (a widget with ipywidgets): records that it was chosen."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs["desc"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("tqdm.auto.tqdm", Auto)  # imports tqdm.auto first, outside the kernel
    monkeypatch.setitem(sys.modules, "IPython", type(sys)("IPython"))
    monkeypatch.setattr(sys.modules["IPython"], "get_ipython", lambda: _Kernel(kernel), raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a kernel's stderr is no terminal
    assert wants_progress("auto") is kernel
    bar = EpochProgress(2, "Epoch 1/1", wants_progress("auto"), refresh_s=0.0, clock=lambda: 0.0)
    bar.step(dict)
    bar.step(dict)
    bar.close({"loss": 2e-5})
    assert made == (["Epoch 1/1"] if kernel else [])
    assert ("loss=2.0000e-05" in capsys.readouterr().err) is kernel
