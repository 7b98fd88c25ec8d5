"""What a run's log holds once the loop and the callbacks call `torchmanager_core.run_log` (issue 23, points 4
and 5): its start, environment, options, model table and batches at `fit`'s start, the test result, and
epochs counted from 1 everywhere (messages, logs, the CSV). Read back from the files a user gets.

Each test is marked xfail(strict) with the change it waits for; the functions themselves are tested in
packages/torchmanager-core/tests/test_run_log.py. The references: batches counted by hand, or by
torch's own `DistributedSampler` for a torchrun run; the test result as `test()` returned it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

import torchmanager
from tests.test_torchrun import torchrun
from tests.workspace import ROOT
from torchmanager.callbacks import CSVLogger, Experiment
from torchmanager.data import Dataset
from torchmanager_core import view
from torchmanager_core.run_log import format_value

SAMPLES, BATCH = 48, 8


def make_manager() -> torchmanager.Manager:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return torchmanager.Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=torchmanager.losses.CrossEntropy(),
        metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
    )


def make_data() -> Dataset:  # type: ignore[type-arg]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 4, generator=generator)
    return Dataset.from_tensor_slices((x, (x[:, 0] > 0).long()), batch_size=BATCH)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "run.log"
    view.set_log_path(str(path))
    return path


def test_the_log_holds_the_run_s_start_environment_options_model_and_batches(log_path: Path) -> None:
    make_manager().fit(make_data(), epochs=2, show_verbose=False)
    text = log_path.read_text()
    lines = text.splitlines()
    assert "Run: starts at epoch 1/2" in lines
    assert any(
        line.startswith("Environment: torchmanager 2") and f"torch {torch.__version__}" in line for line in lines
    )
    assert any(line.startswith("Options: ") and "accumulate_grad_batches=1" in line for line in lines)
    assert "Training Sequential: 58 parameters (58 trainable, 0 frozen)" in text  # 4*8+8 + 8*2+2, by hand
    assert "Total: 58 parameters" in text  # the model's table
    batches = SAMPLES // BATCH  # 6, by hand
    assert (
        f"Batches: {BATCH} samples a batch; {batches} batches an epoch; {2 * batches} optimizer updates in 2 epochs"
        in text
    )


def test_the_log_holds_the_test_result(log_path: Path) -> None:
    manager = make_manager()
    manager.fit(make_data(), epochs=1, val_dataset=make_data(), show_verbose=False)
    summary = manager.test(make_data(), show_verbose=False)
    written = ", ".join(f"{name}={format_value(value)}" for name, value in summary.items())
    assert log_path.read_text().splitlines().count(f"Test: {written}") == 1  # validation is not a test


def test_the_csv_counts_epochs_from_one_as_the_console_does(tmp_path: Path, log_path: Path) -> None:
    make_manager().fit(make_data(), epochs=2, callbacks_list=[CSVLogger(str(tmp_path / "epochs.csv"))])
    with (tmp_path / "epochs.csv").open() as file:
        epochs = [row["epoch"] for row in csv.DictReader(file)]
    logged = re.findall(r"^Epoch (\d+)/2: ", log_path.read_text(), re.MULTILINE)
    assert epochs == logged == ["1", "2"]


def test_a_resumed_experiment_names_the_epoch_it_trains_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manager = make_manager()
    manager.fit(make_data(), epochs=1, callbacks_list=[Experiment("job", manager)], show_verbose=False)
    again = make_manager()
    again.fit(make_data(), epochs=3, callbacks_list=[Experiment("job", again, resume=True)], show_verbose=False)
    text = (tmp_path / "experiments" / "job.exp" / "job.log").read_text()
    assert "Experiment job: resumes at epoch 2," in text  # one epoch done: the second is next
    assert re.findall(r"Epoch (\d+)/3: ", text) == ["2", "3"]


@pytest.mark.slow
def test_under_torchrun_fit_says_the_per_process_batches_first(tmp_path: Path) -> None:
    done = torchrun(ROOT / "tests" / "scripts" / "batches_probe.py", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # the reference: torch's DistributedSampler over the data set, one of 2 ranks
    per_process = len(DistributedSampler(range(SAMPLES), num_replicas=2, rank=0)) // BATCH
    expected = (
        f"Batches: {BATCH} samples a batch in each of 2 processes ({2 * BATCH} a step in all); "
        f"{per_process} batches an epoch in each process; {2 * per_process} optimizer updates in 2 epochs"
    )
    assert done.stdout.count(expected) == 1  # rank 0 alone says it
    assert done.stdout.index(expected) < done.stdout.index("Epoch 1/2")  # before training
