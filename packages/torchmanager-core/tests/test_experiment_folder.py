"""The one rule of when a re-run continues an experiment and when it starts a numbered folder, as `Configs`
applies it (the `Experiment` callback applies the same function; its tests run real trainings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchmanager_core.configs import Configs
from torchmanager_core.configs.experiment_folder import (
    choose_experiment_folder,
    folder_state,
    mark_finished,
    mark_in_progress,
)


class Run(Configs):
    def show_settings(self) -> None:
        pass


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)


def make_run(folder: Path, *, checkpoint: bool, finished: bool) -> None:
    """What an `Experiment` leaves: the mark while training, `checkpoints/last.model` once it saved."""
    mark_in_progress(str(folder))
    (folder / "run.log").write_text("a run\n")
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.model").write_text("weights")
    if finished:
        mark_finished(str(folder))


def test_an_unfinished_run_is_continued_by_the_same_command(tmp_path: Path) -> None:
    make_run(tmp_path / "experiments" / "run.exp", checkpoint=True, finished=False)
    again = Run.from_arguments(["-exp", "run"], show_summary=False)
    assert (again.experiment, again.resume_experiment) == ("run.exp", True)


def test_a_finished_run_is_kept_and_the_next_unfinished_one_continued(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    make_run(experiments / "run.exp", checkpoint=True, finished=True)
    first = Run.from_arguments(["-exp", "run"], show_summary=False)
    assert (first.experiment, first.resume_experiment) == ("run-2.exp", False)
    make_run(experiments / "run-2.exp", checkpoint=True, finished=False)  # that one was preempted
    again = Run.from_arguments(["-exp", "run"], show_summary=False)
    assert (again.experiment, again.resume_experiment) == ("run-2.exp", True)
    # `resume=False` never continues: the first free folder
    assert choose_experiment_folder(str(experiments / "run.exp"), False) == (str(experiments / "run-3.exp"), False)


def test_a_start_that_saved_nothing_leaves_its_folder_free(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "run.exp"
    make_run(folder, checkpoint=False, finished=False)  # killed before its first checkpoint
    assert folder_state(str(folder)) == "free"
    (tmp_path / "experiments" / "empty.exp" / "checkpoints").mkdir(parents=True)  # a failed start's empty folders
    assert folder_state(str(tmp_path / "experiments" / "empty.exp")) == "free"
    for resume in ("auto", False):
        assert choose_experiment_folder(str(folder), resume) == (str(folder), False)  # type: ignore[arg-type]
    assert Run.from_arguments(["-exp", "run"], show_summary=False).experiment == "run.exp"


def test_files_of_something_else_are_taken(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "run.exp"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not a run of ours")  # no mark: never continued, never overwritten
    assert folder_state(str(folder)) == "taken"
    assert Run.from_arguments(["-exp", "run"], show_summary=False).experiment == "run-2.exp"


def test_a_run_still_training_is_never_continued_by_a_second_job(tmp_path: Path) -> None:
    folder = tmp_path / "experiments" / "run.exp"
    make_run(folder, checkpoint=True, finished=False)
    code = (
        "import sys, time\n"
        "from torchmanager_core.configs.experiment_folder import mark_in_progress\n"
        "mark_in_progress(sys.argv[1]); print('marked', flush=True); time.sleep(120)\n"
    )
    training = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert training.stdout is not None and training.stdout.readline() == "marked\n"
        assert folder_state(str(folder)) == "taken"  # a live process of this host holds it
        assert Run.from_arguments(["-exp", "run"], show_summary=False).experiment == "run-2.exp"
    finally:
        training.kill()
        training.wait()
    assert folder_state(str(folder)) == "unfinished"  # it died: the next start continues it
    assert Run.from_arguments(["-exp", "run"], show_summary=False).resume_experiment


def test_every_process_of_a_launch_takes_the_same_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path / "experiments" / "run.exp", checkpoint=True, finished=True)
    chosen = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        configs = Run.from_arguments(["-exp", "run"], show_summary=False)
        chosen.append((configs.experiment, configs.resume_experiment))
    assert chosen == [("run-2.exp", False)] * 2
    assert os.listdir(tmp_path / "experiments") == ["run.exp"]  # choosing writes nothing


def test_the_choice_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="torchmanager")
    make_run(tmp_path / "experiments" / "run.exp", checkpoint=True, finished=False)
    Run.from_arguments(["-exp", "run"], show_summary=False)
    assert (
        "This run continues the unfinished run in 'experiments/run.exp' from its last checkpoint "
        "(`--replace_experiment` starts it anew instead)" in caplog.text
    )
