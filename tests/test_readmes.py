"""The python examples of the root README and the core and meta-package READMEs run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.workspace import ROOT

READMES = [ROOT / "README.md", ROOT / "packages" / "torchmanager-core" / "README.md"]
BLOCKS = [(readme, i, block) for readme in READMES for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(), re.DOTALL))]


def test_each_readme_has_an_example() -> None:
    assert {readme for readme, _, _ in BLOCKS} == set(READMES)


@pytest.mark.parametrize(("readme", "index", "block"), BLOCKS, ids=[f"{r.parent.name}-{i}" for r, i, _ in BLOCKS])
def test_readme_block_runs(readme: Path, index: int, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write experiments/ and model files
    exec(compile(block, f"{readme}:block{index}", "exec"), {"__name__": "readme"})
    if "Experiment(" in block:
        assert (tmp_path / "experiments" / "tour.exp" / "checkpoints" / "best-accuracy.model").is_file()
