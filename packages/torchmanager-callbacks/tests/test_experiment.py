"""Experiment: names, folder layout, configs file, refusing to overwrite, resume, and import laziness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import EarlyStop, Experiment, MonitorType
from torchmanager_core import checkpoint
from torchmanager_core.run_log import format_value

DATA = batches(*blobs(24), size=8)


@pytest.mark.parametrize("name", ["test", "test.exp"])
def test_name_with_or_without_exp(tmp_path: Any, name: str) -> None:
    exp = Experiment(name, make_manager(), root=str(tmp_path))
    assert exp.experiment_dir == str(tmp_path / "test.exp") and exp.log_path == str(tmp_path / "test.exp" / "test.log")
    assert [type(c).__name__ for c in exp] == ["LastCheckpoint", "TensorBoard"]  # no monitors: last checkpoint only


def test_layout_and_configs(tmp_path: Any) -> None:
    manager = make_manager()
    configs = SimpleNamespace(epochs=2, lr=0.1, device=None, name="run", shape=(1, 2))
    exp = Experiment(
        "run", manager, {"accuracy": MonitorType.MAX, "loss": MonitorType.MIN}, configs=configs, root=str(tmp_path)
    )
    manager.fit(DATA, epochs=2, val_dataset=DATA, callbacks_list=[exp])
    folder = tmp_path / "run.exp"
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "best-accuracy.model",
        "best-loss.model",
        "best_accuracy.model",
        "best_loss.model",
        "last.model",
    ]
    for metric in ("accuracy", "loss"):  # upstream's name opens the same file: one file on disk
        upstream_name, ours = (
            folder / "checkpoints" / f"best_{metric}.model",
            folder / "checkpoints" / f"best-{metric}.model",
        )
        assert upstream_name.is_symlink() and os.path.samefile(upstream_name, ours)
        assert torch.equal(checkpoint.load(upstream_name)["model"]["weight"], checkpoint.load(ours)["model"]["weight"])
    assert yaml.safe_load((folder / "run.cfg").read_text()) == {
        "epochs": 2,
        "lr": 0.1,
        "device": None,
        "name": "run",
        "shape": [1, 2],
    }
    assert any(p.name.startswith("events.out.tfevents") for p in (folder / "data").rglob("*"))


def test_configs_with_to_yaml_write_themselves(tmp_path: Any) -> None:
    class Configs:
        def to_yaml(self, path: str) -> None:
            with open(path, "w") as file:
                file.write("written: by to_yaml\n")

    manager = make_manager()
    manager.fit(DATA, epochs=1, callbacks_list=[Experiment("c", manager, configs=Configs(), root=str(tmp_path))])
    assert (tmp_path / "c.exp" / "c.cfg").read_text() == "written: by to_yaml\n"


def test_a_second_run_gets_a_numbered_folder_and_resume_continues_the_first(tmp_path: Any) -> None:
    manager = make_manager()
    manager.fit(DATA, epochs=2, callbacks_list=[Experiment("x", manager, ["accuracy"], root=str(tmp_path))])
    first = checkpoint.load(tmp_path / "x.exp" / "checkpoints" / "last.model")
    again = Experiment("x.exp", None, root=str(tmp_path))  # the same script run again
    assert again.experiment_dir == str(tmp_path / "x-2.exp") and not again.resumed
    make_manager().fit(DATA, epochs=1, callbacks_list=[again])
    assert Experiment("x", None, root=str(tmp_path)).experiment_dir == str(tmp_path / "x-3.exp")
    assert torch.equal(
        checkpoint.load(tmp_path / "x.exp" / "checkpoints" / "last.model")["model"]["weight"], first["model"]["weight"]
    )
    assert "x-2.exp" in (tmp_path / "x-2.exp" / "x.log").read_text()  # the log names the folder this run is kept in

    resumed_manager = make_manager(seed=3)
    exp = Experiment("x", resumed_manager, ["accuracy"], resume=True, root=str(tmp_path))
    assert exp.experiment_dir == str(tmp_path / "x.exp") and exp.resume_checkpoint() == exp.last_ckpt_path
    resumed_manager.fit(DATA, epochs=4, callbacks_list=[exp])
    reference = make_manager()
    reference.fit(DATA, epochs=4)
    assert resumed_manager.raw_model.weight.tolist() == reference.raw_model.weight.tolist()
    assert checkpoint.load(tmp_path / "x.exp" / "checkpoints" / "last.model")["epoch"] == 4
    # the best value came back from the checkpoint: a worse epoch after the resume did not overwrite it
    assert exp.best_checkpoints[0].best_score >= first["callbacks"]["BestCheckpoint#0"]["best"]


def test_resume_true_needs_a_run_and_auto_starts_one(tmp_path: Any) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"Experiment `.*new.exp` cannot be resumed: it has no `checkpoints/last.model`; pass `resume='auto'` to "
        r"start it when there is nothing to resume, or choose another name. Received: experiment='new', resume=True",
    ):
        Experiment("new", None, resume=True, root=str(tmp_path))
    manager = make_manager()
    first = Experiment("new", None, resume="auto", root=str(tmp_path))
    assert not first.resumed and first.resume_checkpoint() is None
    manager.fit(DATA, epochs=1, callbacks_list=[first])
    # that run finished: "auto" keeps it and starts anew beside it; True continues it for more epochs
    second = Experiment("new", None, resume="auto", root=str(tmp_path))
    assert not second.resumed and second.experiment_dir == str(tmp_path / "new-2.exp")
    third = Experiment("new", None, resume=True, root=str(tmp_path))
    assert third.resumed and third.experiment_dir == str(tmp_path / "new.exp")
    resumed = make_manager(seed=4)
    resumed.fit(DATA, epochs=3, callbacks_list=[third])
    reference = make_manager()
    reference.fit(DATA, epochs=3)
    assert resumed.raw_model.weight.tolist() == reference.raw_model.weight.tolist()
    with pytest.raises(ValueError, match=r"`resume` must be True, False or 'auto'. Received: resume='yes'"):
        Experiment("new", None, resume="yes", root=str(tmp_path))  # type: ignore[arg-type]


def test_bad_arguments(tmp_path: Any) -> None:
    with pytest.raises(
        TypeError,
        match=r"`monitors` must be a list of metric names or a dict of names to `MonitorType`.*Received: monitors='accuracy'",
    ):
        Experiment("e", make_manager(), "accuracy", root=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None \(from the monitor.s name\). Received: monitor_type='max'",
    ):
        Experiment("e", make_manager(), {"accuracy": "max"}, root=str(tmp_path))  # type: ignore[dict-item]
    with pytest.raises(
        ValueError, match=r"`experiment` must be a non-empty name, such as 'test.exp'. Received: experiment=''"
    ):
        Experiment("", make_manager(), root=str(tmp_path))


def test_importing_loads_neither_tensorboard_nor_yaml() -> None:
    code = "import sys, torchmanager_callbacks; print(sorted(m for m in ('tensorboard', 'yaml') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_early_stop_with_experiment_resumes_its_counter(tmp_path: Any) -> None:
    manager = make_manager(lr=0.0)
    early = EarlyStop("loss", MonitorType.MIN, steps=3, manager=manager)
    manager.fit(DATA, epochs=2, callbacks_list=[early, Experiment("s", manager, root=str(tmp_path))])
    again = make_manager(lr=0.0)
    early2 = EarlyStop("loss", MonitorType.MIN, steps=3, manager=again)
    exp = Experiment("s", again, resume=True, root=str(tmp_path))
    # the experiment hands its checkpoint to fit, which gives every callback of the list its state back
    again.fit(DATA, epochs=10, callbacks_list=[early2, exp])
    assert early2.wait == 3 and again.current_epoch == 4  # epochs 1 (before the resume), 2, 3 without improvement


def test_a_script_run_again_is_told_on_its_console_where_its_run_is_kept(tmp_path: Path) -> None:
    """The README's Tour run twice, each in a fresh process without `Configs` (which set up the console itself):
    the second run's console says the first is kept and where this one goes, as the run's log does."""
    code = (
        "import torch; from torchmanager_core import Manager; from torchmanager_callbacks import Experiment\n"
        "model = torch.nn.Linear(4, 2)\n"
        "manager = Manager(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())\n"
        "experiment = Experiment('tour.exp', manager)\n"
        "manager.fit([(torch.randn(8, 4), torch.randint(0, 2, (8,)))], epochs=1, callbacks_list=[experiment])\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert "Experiment tour: starts at epoch 1, folder experiments/tour.exp," in runs[0]
    kept = (
        "Experiment tour: `experiments/tour.exp` holds a finished run, so this run is kept in `experiments/tour-2.exp`"
    )
    assert kept in runs[1]
    assert kept in (tmp_path / "experiments" / "tour-2.exp" / "tour.log").read_text()  # the log says the same


def test_the_test_after_fit_is_in_the_run_s_log_and_a_later_run_is_not(tmp_path: Path) -> None:
    """A script's `test()` after `fit` belongs to the run (issue 23 point 4): its result is in the experiment's
    log, as `test()` returned it; the next experiment's run goes to its own log only."""
    manager = make_manager()
    first = Experiment("first", manager, root=str(tmp_path))
    manager.fit(DATA, epochs=1, callbacks_list=[first], show_verbose=False)
    summary = manager.test(DATA, show_verbose=False)
    first_log = records(first.log_path)
    written = ", ".join(f"{name}={format_value(value)}" for name, value in summary.items())
    assert first_log.count(f"Test: {written}") == 1
    assert first_log.index("Experiment first: training ended") < first_log.index(f"Test: {written}")

    other = make_manager(seed=1)
    second = Experiment("second", other, root=str(tmp_path))
    other.fit(DATA, epochs=1, callbacks_list=[second], show_verbose=False)
    assert records(first.log_path) == first_log  # nothing of the second run
    assert "Experiment second: training ended" in records(second.log_path)
    second.close_log()
    other.test(DATA, show_verbose=False)
    assert not any(line.startswith("Test:") for line in records(second.log_path))


def records(log_path: str) -> list[str]:
    """The messages of a log file's records (without their time and level)."""
    return [line.split(" INFO ", 1)[-1] for line in Path(log_path).read_text().splitlines()]
