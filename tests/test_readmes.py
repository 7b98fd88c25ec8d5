"""The python examples of the READMEs run as written, each block in a fresh folder.

(The callbacks README's examples leave names to the reader; its own test fills them in.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.workspace import ROOT

READMES = [ROOT / "README.md"] + [
    ROOT / "packages" / dist / "README.md"
    for dist in ("torchmanager-core", "torchmanager-metrics", "torchmanager-losses", "torchmanager-data")
]
BLOCKS = [
    (readme, i, block)
    for readme in READMES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(), re.DOTALL))
]


def test_each_readme_has_an_example() -> None:
    assert {readme for readme, _, _ in BLOCKS} == set(READMES)


@pytest.mark.parametrize(("readme", "index", "block"), BLOCKS, ids=[f"{r.parent.name}-{i}" for r, i, _ in BLOCKS])
def test_readme_block_runs(
    readme: Path, index: int, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples write experiments/ and model files
    exec(compile(block, f"{readme}:block{index}", "exec"), {"__name__": "readme"})
    if 'Experiment("tour.exp"' in block:
        assert (tmp_path / "experiments" / "tour.exp" / "checkpoints" / "best-accuracy.model").is_file()
    if 'Experiment("job"' in block:  # the preemption example, not preempted: it trained to the end and saved
        assert (tmp_path / "experiments" / "job.exp" / "checkpoints" / "last.model").is_file()
