"""The overhead benchmark runs end to end with tiny settings and prints every row with a ratio.

Timings are never asserted: this checks that the script works (rows, notes, import line), not
how fast anything is.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.workspace import ROOT

SCRIPT = ROOT / "benchmarks" / "overhead.py"
NUMBER = r"-?\d+\.\d+"
ROW_LINE = re.compile(
    rf"^(?P<label>\S.*?)\s+(?P<raw>{NUMBER})\s+(?P<ours>{NUMBER})\s+(?P<ratio>{NUMBER})\s+{NUMBER} us$"
)
LABELS = {
    "A": "A: MLP 64-256-10",
    "B": "B: CNN 1-32-64",
    "callbacks": "A + LastCheckpoint/epoch + TensorBoard",
    "bf16": "A bf16 (autocast both sides)",
    "ckpt-steps": "A + LastCheckpoint every 2 steps",
    "dist": "A in a gloo group, world size 1",
}
TINY = ["--rounds", "1", "--warmup", "0", "--epochs", "2", "--steps", "4", "--ckpt-every", "2", "--import-runs", "1"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _rows(stdout: str) -> dict[str, dict[str, float]]:
    rows = {}
    for line in stdout.splitlines():
        match = ROW_LINE.match(line)
        if match:
            rows[match["label"]] = {k: float(match[k]) for k in ("raw", "ours", "ratio")}
    return rows


@pytest.mark.slow
def test_every_row_prints_a_ratio_and_its_notes() -> None:
    result = _run(*TINY)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = _rows(out)
    assert list(rows) == list(LABELS.values()), out
    for label, row in rows.items():
        assert row["raw"] > 0 and row["ours"] > 0 and row["ratio"] > 0, (label, row)
    assert re.search(r"^torch \S+, torchmanager \S+, Python \S+$", out, re.MULTILINE), out
    assert re.search(r"^CPU: .+, \d+ logical cores; torch threads: 1 intra-op", out, re.MULTILINE), out
    assert "per-batch hooks the loop calls: none" in out  # per-epoch callbacks are not called per batch
    # 2 epochs x 4 steps: a save every 2 steps (4) and one per epoch (2)
    assert re.search(
        r"^    6 saves per run \(4 every 2 steps \+ 2 at epoch ends, freq=1\), \d+ KB each: ", out, re.MULTILINE
    ), out
    assert "the manager trains `Sequential` (it wraps in DDP only when world size > 1)" in out
    assert re.search(rf"raw DDP\(model\) at world size 1 vs raw: ratio {NUMBER}", out), out
    assert re.search(r"^import torchmanager over import torch: -?\d+ ms", out, re.MULTILINE), out
    assert "SUSPICIOUS" not in out


@pytest.mark.slow
def test_rows_picks_the_rows_to_run() -> None:
    result = _run(*TINY, "--rows", "A", "bf16")
    assert result.returncode == 0, result.stderr
    assert list(_rows(result.stdout)) == [LABELS["A"], LABELS["bf16"]]
    assert "import torchmanager over import torch" not in result.stdout


def test_unknown_row_and_zero_rounds_are_refused() -> None:
    result = _run("--rows", "C")
    assert result.returncode == 2 and "invalid choice: 'C'" in result.stderr
    result = _run("--rounds", "0")
    assert result.returncode == 2 and "must be an int >= 1, got 0" in result.stderr
