"""The python examples of the READMEs run as written, each block in a fresh folder; the block
that loads what the tour saved runs after the tour, in a new process without torchmanager.

(The callbacks README's examples leave names to the reader; its own test fills them in.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.workspace import ROOT

READMES = [ROOT / "README.md"] + [
    ROOT / "packages" / dist / "README.md"
    for dist in ("torchmanager-core", "torchmanager-metrics", "torchmanager-losses", "torchmanager-data")
]
AFTER_THE_TOUR = "# in a new Python process, after the tour:\n"
"""How a block that uses the files the tour wrote begins (tested below, with the tour, in a new process)."""
ALL_BLOCKS = [
    (readme, i, textwrap.dedent(block))  # blocks nested in a list item are indented
    for readme in READMES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(), re.DOTALL))
]
BLOCKS = [(readme, i, block) for readme, i, block in ALL_BLOCKS if not block.startswith(AFTER_THE_TOUR)]


def test_each_readme_has_an_example() -> None:
    assert {readme for readme, _, _ in BLOCKS} == set(READMES)


@pytest.mark.parametrize(("readme", "index", "block"), BLOCKS, ids=[f"{r.parent.name}-{i}" for r, i, _ in BLOCKS])
def test_readme_block_runs(
    readme: Path, index: int, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples write experiments/ and model files
    if readme == ROOT / "README.md":  # "Coming from torchmanager 1.5" opens a file that 1.5 wrote
        shutil.copy(ROOT / "tests" / "data" / "upstream15_manager.model", tmp_path / "last.model")
    exec(compile(block, f"{readme}:block{index}", "exec"), {"__name__": "readme"})
    if 'Experiment("tour.exp"' in block:
        assert (tmp_path / "experiments" / "tour.exp" / "checkpoints" / "best-accuracy.model").is_file()
    if 'Experiment("job"' in block:  # the preemption example, not preempted: it trained to the end and saved
        assert (tmp_path / "experiments" / "job.exp" / "checkpoints" / "last.model").is_file()


NO_TORCHMANAGER = """
import importlib.abc, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("torchmanager"):
            raise ImportError(f"{name} was imported: this process must not need torchmanager")
sys.meta_path.insert(0, _Refuse())
"""

CHECK_THE_LOADED_MODEL = """
import pickle
x, expected = torch.load("probe.pt")
with torch.no_grad():
    assert torch.equal(model(x), expected), "the README's way loaded other weights"
try:
    torch.load("whole.pth")
    raise AssertionError("torch.load read a whole pickled model with its default weights_only=True")
except pickle.UnpicklingError:
    pass
whole = torch.load("whole.pth", weights_only=False)  # upstream's way, as the README says
with torch.no_grad():
    assert torch.equal(whole(x), expected)
assert not [name for name in sys.modules if name.startswith("torchmanager")]
print("loaded without torchmanager")
"""


def test_the_tour_model_loads_in_a_new_process_without_torchmanager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tour,) = [block for readme, _, block in ALL_BLOCKS if readme == ROOT / "README.md" and "torch.save(" in block]
    (later,) = [block for _, _, block in ALL_BLOCKS if block.startswith(AFTER_THE_TOUR)]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(tour, "README.md:tour", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, torch.nn.Module)
    x = torch.randn(5, 8, 8)
    with torch.no_grad():
        torch.save((x, model(x)), "probe.pt")
    torch.save(model, "whole.pth")  # the seed README's way, for the fallback the README describes
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCHMANAGER + later + CHECK_THE_LOADED_MODEL],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0 and "loaded without torchmanager" in done.stdout, done.stderr
