"""The README's main job runs as a user runs it, reaches the promised accuracy and keeps its experiment."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.workspace import ROOT


def test_demo_reaches_095_test_accuracy_and_writes_its_experiment(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"), "--quiet", "--experiment", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"test accuracy (\d\.\d+)", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) > 0.95

    exp = tmp_path / "experiments" / "demo.exp"
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == [
        "best-accuracy.model",
        "best_accuracy.model",
        "last.model",
    ]
    assert any((exp / "data").iterdir())  # TensorBoard event file
    log = (exp / "demo.log").read_text()
    assert "Epoch 30/30: loss=" in log and "'epochs': 30" in log  # epoch summaries and the settings
    cfg = (exp / "demo.cfg").read_text()
    assert "epochs: 30" in cfg and "lr: 0.05" in cfg
    last = torch.load(exp / "checkpoints" / "last.model", weights_only=True)
    assert last["epoch"] == 30

    again = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"), "--quiet", "--experiment", "demo", "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr  # the same command again works: a new numbered folder
    assert "this run is kept in 'experiments/demo-2.exp'" in again.stdout + again.stderr
    assert torch.load(exp / "checkpoints" / "last.model", weights_only=True)["epoch"] == 30  # the first run is kept
    assert (
        torch.load(tmp_path / "experiments" / "demo-2.exp" / "checkpoints" / "last.model", weights_only=True)["epoch"]
        == 1
    )


def test_demo_resumes_its_experiment(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(ROOT / "examples" / "digits.py"), "--quiet", "--experiment", "again", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    assert run("--epochs", "2").returncode == 0
    resumed = run("--epochs", "4", "--resume_experiment")
    assert resumed.returncode == 0, resumed.stderr
    log = (tmp_path / "experiments" / "again.exp" / "again.log").read_text()
    assert "resumes at epoch 3" in log and "Epoch 3/4" in log and "Epoch 1/4" not in log  # epochs counted from 1
    assert (
        torch.load(tmp_path / "experiments" / "again.exp" / "checkpoints" / "last.model", weights_only=True)["epoch"]
        == 4
    )


def test_demo_trains_with_one_torch_thread_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its speed on a small machine comes from one thread (see the README); `--num_threads` sets another count."""
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits.py")
    assert spec is not None and spec.loader is not None
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        digits.main(["--quiet", "--epochs", "1", "--experiment", "one"])
        assert torch.get_num_threads() == 1
        digits.main(["--quiet", "--epochs", "1", "--experiment", "three", "--num_threads", "3"])
        assert torch.get_num_threads() == 3
        with pytest.raises(ValueError, match=r"must be positive\. Received: .*num_threads=0"):
            digits.main(["--quiet", "--epochs", "1", "--experiment", "none", "--num_threads", "0"])
    finally:
        torch.set_num_threads(threads)
