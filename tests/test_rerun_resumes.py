""" "Run the same command again to resume" holds for the commands as users run them (issue 23, point 1).

The main job (`python examples/digits.py ...`, whose `Configs` picks the folder) and the README's tour
(an `Experiment` with its default `resume`) get a real SIGTERM from outside during `fit`, exit 143
having saved `last.model`, and the same command run again continues that run in the same folder, ending
bit-identical (`torch.equal`, weights and optimizer) to a run that was never interrupted. Once a run
finished, the same command starts a numbered folder beside it (the rule of
`torchmanager_core.configs.experiment_folder`, which `Configs` and `Experiment` share).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.run_records import assert_same_tensors
from tests.workspace import ROOT
from torchmanager_core.configs.experiment_folder import choose_experiment_folder

pytestmark = pytest.mark.slow

DIGITS = ROOT / "examples" / "digits.py"
TIMEOUT = 300
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=ENV)


def run_and_terminate(command: list[str], cwd: Path, after: str) -> tuple[int, str]:
    """Run `command`, send it SIGTERM from outside once it printed a line starting with `after`; its code and output."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=ENV)
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line)
        if line.startswith(after):
            child.send_signal(signal.SIGTERM)
            break
    rest, _ = child.communicate(timeout=TIMEOUT)
    return child.returncode, "".join(seen) + rest


def training_state(path: Path) -> dict[str, object]:
    saved = torch.load(path, weights_only=True)
    return {key: saved[key] for key in ("model", "optimizer", "epoch", "step", "global_step")}


def test_the_main_job_run_again_after_sigterm_continues_its_run(tmp_path: Path) -> None:
    command = [sys.executable, str(DIGITS), "--quiet", "--experiment", "job"]
    (tmp_path / "reference").mkdir()
    reference = subprocess.Popen(
        [*command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path / "reference", env=ENV
    )
    # 30 epochs (the default): the signal, sent once the first epoch's line is out, comes long before the end
    code, output = run_and_terminate(command, tmp_path, after="Epoch 1/30")
    assert code == 143, output
    assert "SIGTERM received: training stopped" in output and "Run the same command again to resume." in output
    folder = tmp_path / "experiments" / "job.exp"
    assert (folder / "in-progress").is_file() and (folder / "checkpoints" / "last.model").is_file()
    stopped_at = torch.load(folder / "checkpoints" / "last.model", weights_only=True)["epoch"]
    assert 1 <= stopped_at < 30

    again = run(command, tmp_path)  # the same command
    assert again.returncode == 0, again.stderr
    assert "This run continues the unfinished run in 'experiments/job.exp' from its last checkpoint" in again.stdout
    assert sorted(os.listdir(tmp_path / "experiments")) == ["job.exp"]  # no job-2.exp
    log = (folder / "job.log").read_text()
    assert f"resumes at epoch {stopped_at + 1}" in log and "Epoch 30/30" in log  # epochs counted from 1
    assert not (folder / "in-progress").exists()  # finished now

    assert reference.wait(timeout=TIMEOUT) == 0, reference.stderr.read() if reference.stderr else ""
    expected = training_state(tmp_path / "reference" / "experiments" / "job.exp" / "checkpoints" / "last.model")
    assert_same_tensors(expected, training_state(folder / "checkpoints" / "last.model"), "last.model")

    # the run finished: the same command now keeps it and starts beside it (Configs applies the shared rule)
    assert choose_experiment_folder(str(folder)) == (str(tmp_path / "experiments" / "job-2.exp"), False)


TOUR = re.search(r"## Tour\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
SIGNAL_AT_BATCH = """
import os, signal, torchmanager
from torchmanager.callbacks import Frequency, LambdaCallback

_fit = torchmanager.Manager.fit


def _fit_with_a_signal(self, *args, **kwargs):  # the test's own hand: SIGTERM after batch 3 of epoch 4, first start
    if os.environ.get("SEND_SIGTERM") == "1":
        def send(batch, summary):
            if self.current_epoch == 3 and batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        kwargs["callbacks_list"] = [*kwargs.get("callbacks_list", []), LambdaCallback(post_fn=send, freq=Frequency.BATCH)]
    return _fit(self, *args, **kwargs)


torchmanager.Manager.fit = _fit_with_a_signal
import torch

torch.manual_seed(0)  # the tour draws its model's initial weights: the same in every start, to compare with a reference
"""
SAVE_STATE = """
torch.save({"model": manager.raw_model.state_dict(), "optimizer": manager.optimizer.state_dict()}, "final.pt")
"""


def test_the_readme_tour_run_again_after_sigterm_continues_its_run(tmp_path: Path) -> None:
    assert TOUR is not None and 'Experiment("tour.exp", manager, monitors=["accuracy"])' in TOUR.group(1)
    script = tmp_path / "tour.py"
    script.write_text(SIGNAL_AT_BATCH + TOUR.group(1) + SAVE_STATE)
    (tmp_path / "reference").mkdir()
    reference = run([sys.executable, str(script)], tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    interrupted = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        env={**ENV, "SEND_SIGTERM": "1"},
    )
    assert interrupted.returncode == 143, interrupted.stderr
    folder = tmp_path / "experiments" / "tour.exp"
    saved = torch.load(folder / "checkpoints" / "last.model", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (3, 3)  # after batch 3 of epoch 4

    again = run([sys.executable, str(script)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(os.listdir(tmp_path / "experiments")) == ["tour.exp"]
    expected = torch.load(tmp_path / "reference" / "final.pt", weights_only=True)
    assert_same_tensors(expected, torch.load(tmp_path / "final.pt", weights_only=True), "final")

    third = run([sys.executable, str(script)], tmp_path)  # after a finished run: a new folder, the first kept
    assert third.returncode == 0, third.stderr
    assert sorted(os.listdir(tmp_path / "experiments")) == ["tour-2.exp", "tour.exp"]
    assert torch.load(folder / "checkpoints" / "last.model", weights_only=True)["epoch"] == 10
