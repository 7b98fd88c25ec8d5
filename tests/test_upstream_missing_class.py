"""An upstream 1.5 checkpoint loaded with `trusted=True` whose pickled class cannot be found here (issue 23, point 9)
gets a `CheckpointError` naming the class and what to do, not Python's raw `AttributeError`/`ModuleNotFoundError`:
the project's module missing from the path, a class gone from its module, a class of another script's `__main__`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchmanager
from tests.workspace import ROOT
from torchmanager_core.checkpoint import CheckpointError, load

SUBCLASS_FILE = ROOT / "tests" / "data" / "upstream15_subclass.model"  # pickles upstream15_subclass.StepsManager


def test_a_project_module_off_the_path_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "upstream15_subclass", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != (ROOT / "tests" / "data")])
    with pytest.raises(
        CheckpointError,
        match=r"^The checkpoint pickles an object of class `upstream15_subclass\.StepsManager`, which cannot be found "
        r"\(its module `upstream15_subclass` cannot be imported here: put the project's code on the path "
        r"\(`sys\.path`\)\); or load the weights only, with `model=` .* Received: class=upstream15_subclass\.StepsManager$",
    ):
        torchmanager.Manager.from_checkpoint(SUBCLASS_FILE, trusted=True)


def test_a_class_gone_from_its_module_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "upstream15_subclass.py").write_text("# the project renamed its manager class\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = sys.modules.pop("upstream15_subclass", None)
    try:
        with pytest.raises(
            CheckpointError,
            match=r"class `upstream15_subclass\.StepsManager`, which cannot be found \(its module `upstream15_subclass` "
            r"has no `StepsManager` any more: bring the class back under that name, or import it\)",
        ):
            load(SUBCLASS_FILE, trusted=True)
    finally:  # the other tests import the real module
        sys.modules.pop("upstream15_subclass", None)
        if real is not None:
            sys.modules["upstream15_subclass"] = real


SAVE_FROM_MAIN = """
import sys, torch

class Net(torch.nn.Module):  # defined in the script that saves: pickled as __main__.Net
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

model = Net()
torch.save({"model": model, "optimizer": None, "loss_fn": None, "metrics": {}, "last_epoch": 0,
            "save_weights_only": False}, sys.argv[1])
torch.save(model.state_dict(), sys.argv[2])
"""


def test_a_class_of_another_scripts_main_is_named(tmp_path: Path) -> None:
    path, weights = tmp_path / "net.model", tmp_path / "weights.pt"
    subprocess.run([sys.executable, "-c", SAVE_FROM_MAIN, str(path), str(weights)], check=True, timeout=120)
    assert set(torch.load(weights, weights_only=True)) == {"linear.weight", "linear.bias"}  # it did save a Net
    with pytest.raises(
        CheckpointError,
        match=r"class `__main__\.Net`, which cannot be found \(it was defined in the script that saved the file: "
        r"define or import `Net` in the script that loads it, under the same name, before loading\)",
    ):
        load(path, trusted=True)
    assert not isinstance(sys.modules["__main__"].__dict__.get("Net"), type)
