"""The run's log: how values are written, one copy of each line on the console, and the lines a run writes
(its start, environment, options, model, batches, test result), read back from a log file."""

from __future__ import annotations

import logging
import math
import platform
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchmanager_core.run_log import (
    format_batches,
    format_value,
    log_run_start,
    log_summary,
    log_test_result,
    logger,
)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """A file handler on the "torchmanager" logger, as `set_log_path` or an Experiment adds one."""
    path = tmp_path / "run.log"
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    yield path
    logger.removeHandler(handler)
    handler.close()


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    """Handlers added to the root logger during the test, removed after it (as `logging.basicConfig` adds)."""
    added: list[logging.Handler] = []
    yield added
    for handler in added:
        logging.getLogger().removeHandler(handler)
        handler.close()


def on_root(handlers: list[logging.Handler], handler: logging.Handler) -> None:
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("ROOT %(message)s"))
    logging.getLogger().addHandler(handler)
    handlers.append(handler)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (2e-5, "2.0000e-05"),
        (1e30, "1.0000e+30"),
        (-3.5e-7, "-3.5000e-07"),
        (2.17, "2.170"),
        (0.5, "0.5000"),
        (0.0012341, "0.001234"),
        (123.456, "123.5"),
        (999999.0, "999999"),
        (1234567.0, "1.2346e+06"),
        (0.0, "0"),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
    ],
)
def test_values_are_written_with_four_significant_digits_or_as_powers_of_ten(value: float, written: str) -> None:
    assert format_value(value) == written


@given(st.floats(min_value=-1e300, max_value=1e300).filter(lambda v: v != 0))
def test_a_written_value_is_the_value_to_four_significant_digits(value: float) -> None:
    # the reference: Python's own rounding to 4 significant digits (`.4g`); whole numbers from 10,000
    # and powers of ten keep a 5th
    written = format_value(value)
    if 1e-3 <= abs(value) < 1e4:
        assert float(written) == float(f"{value:.4g}")
    else:
        assert abs(float(written) - value) <= 5.000001e-5 * abs(value)


def test_a_line_is_printed_once_when_the_root_logger_prints_too(
    capsys: pytest.CaptureFixture[str], root_handlers: list[logging.Handler]
) -> None:
    log_summary("Epoch 1/2", {"loss": 0.25})
    assert capsys.readouterr().out == "Epoch 1/2: loss=0.2500\n"  # our console alone
    on_root(root_handlers, logging.StreamHandler(sys.stdout))  # what `logging.basicConfig(stream=sys.stdout)` adds
    log_summary("Epoch 2/2", {"loss": 0.125})
    logger.warning("a warning")
    assert capsys.readouterr().out == "ROOT Epoch 2/2: loss=0.1250\nROOT a warning\n"  # the user's format, once


def test_a_line_a_bar_showed_goes_to_the_log_files_alone(
    capsys: pytest.CaptureFixture[str], root_handlers: list[logging.Handler], log_file: Path, tmp_path: Path
) -> None:
    on_root(root_handlers, logging.StreamHandler(sys.stderr))
    on_root(root_handlers, logging.FileHandler(tmp_path / "root.log"))
    log_summary("Epoch 1/2", {"loss": 0.25}, console=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert log_file.read_text() == "Epoch 1/2: loss=0.2500\n"
    assert (tmp_path / "root.log").read_text() == "ROOT Epoch 1/2: loss=0.2500\n"


def test_a_quiet_logger_writes_nothing(log_file: Path) -> None:
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        log_summary("Epoch 1/2", {"loss": 0.25}, console=False)
        log_test_result({"loss": 0.25})
    finally:
        logger.setLevel(level)
    assert log_file.read_text() == ""


def test_the_run_start_writes_the_environment_options_and_model(
    capsys: pytest.CaptureFixture[str], log_file: Path
) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    options = {"accumulate_grad_batches": 2, "clip_grad_norm": 0.5, "clip_grad_value": None}
    log_run_start(model, torch.device("cpu"), "fp32", options=options, total_epochs=10)
    lines = log_file.read_text().splitlines()
    assert lines[0] == "Run: starts at epoch 1/10"
    assert lines[1] == (
        f"Environment: torchmanager {__import__('torchmanager_core').__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()} ({platform.platform(terse=True)}), device cpu, precision fp32, 1 process"
    )
    assert lines[2] == "Options: accumulate_grad_batches=2, clip_grad_norm=0.5000, clip_grad_value=None"
    model_line = "Training Sequential: 195 parameters (195 trainable, 0 frozen) on cpu, precision fp32"
    assert lines[3] == model_line and lines[4] == "Model:"
    assert lines[-1] == "Total: 195 parameters (780 B): 195 trainable, 0 frozen"  # 64 x 3 + 3 float32 values
    assert capsys.readouterr().out == model_line + "\n"  # the console gets the one line


def test_a_resumed_run_says_where_it_resumes_counting_epochs_from_one(log_file: Path) -> None:
    model = torch.nn.Linear(2, 2)
    log_run_start(model, torch.device("cpu"), "bf16-mixed", epoch=3, total_epochs=10, step=5)
    log_run_start(model, torch.device("cpu"), "fp32", epoch=3)
    starts = [line for line in log_file.read_text().splitlines() if line.startswith("Run:")]
    assert starts == ["Run: resumes at epoch 4/10, after batch 5", "Run: resumes at epoch 4"]


def test_the_test_result_is_one_line(capsys: pytest.CaptureFixture[str], log_file: Path) -> None:
    log_test_result({"loss": 0.0123456, "accuracy": 0.96875})
    assert log_file.read_text() == "Test: loss=0.01235, accuracy=0.9688\n"
    assert capsys.readouterr().out == "Test: loss=0.01235, accuracy=0.9688\n"


def optimizer_updates(batches_per_epoch: int, accumulate: int, epochs: int) -> int:
    """The reference: an optimizer stepped by hand at each window's last batch (and an epoch's last)."""
    updates = 0
    for _ in range(epochs):
        for batch in range(1, batches_per_epoch + 1):
            updates += batch % accumulate == 0 or batch == batches_per_epoch
    return updates


def test_the_batches_line_gives_per_process_and_global_sizes_and_the_updates_a_schedule_counts() -> None:
    line = format_batches(64, 15, processes=2, accumulate=2, total_epochs=10)
    assert line == (
        "Batches: 64 samples a batch in each of 2 processes (128 a step in all), 256 an optimizer update "
        "(2 batches); 15 batches an epoch in each process, 8 optimizer updates; "
        "80 optimizer updates in 10 epochs (a schedule's `total_steps`)"
    )
    assert int(re.findall(r"(\d+) optimizer updates in", line)[0]) == optimizer_updates(15, 2, 10)
    assert format_batches(32, 7, total_epochs=3) == (
        "Batches: 32 samples a batch; 7 batches an epoch; 21 optimizer updates in 3 epochs (a schedule's `total_steps`)"
    )
    assert format_batches(None, None) == "Batches: batch size unknown; steps an epoch unknown"


def test_the_batches_line_counts_what_a_one_cycle_schedule_needs() -> None:
    """OneCycleLR sized with the line's count reaches its final rate at the run's last update; sized with
    the count of the whole data set (as one process would see it, here 2 processes) it never anneals."""
    batches, accumulate, epochs = 7, 3, 4

    def last_rate(total_steps: int) -> float:
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total_steps)
        rates = []
        for _ in range(optimizer_updates(batches, accumulate, epochs)):  # the run's updates, counted by hand
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return rates[-1]

    line = format_batches(8, batches, processes=2, accumulate=accumulate, total_epochs=epochs)
    total = int(re.findall(r"(\d+) optimizer updates in", line)[0])
    assert last_rate(total) == pytest.approx(0.1 / 25 / 1e4)  # OneCycleLR's final rate: max / 25 / 1e4
    assert last_rate(2 * total) > 0.01  # sized for the whole data set in one process: still high at the end
