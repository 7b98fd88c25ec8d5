"""The overhead benchmark runs end to end with tiny settings and prints every row with a ratio.

Timings are never asserted: this checks that the script works (rows, notes, import line), not
how fast anything is. Instruction counts (`--instructions`, under callgrind) are checked against
themselves: a step costs the same in every epoch, so the count per extra step from 1 to 2 epochs
and from 2 to 3 must agree, which they do only if counting is switched on and off around each run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks.bench_callgrind import client_requests_unavailable, running_on_valgrind, valgrind_missing
from tests.workspace import ROOT

SCRIPT = ROOT / "benchmarks" / "overhead.py"
NUMBER = r"-?\d+\.\d+"
ROW_LINE = re.compile(
    rf"^(?P<label>\S.*?)\s+(?P<raw>{NUMBER})\s+(?P<ours>{NUMBER})\s+(?P<ratio>{NUMBER})\s+{NUMBER} us$"
)
LABELS = {
    "A": "A: MLP 64-256-10",
    "B": "B: CNN 1-32-64",
    "S": "S: MLP 64-64-10, batch 32",
    "P": "P: S, train_step copied from the default",
    "callbacks": "A + LastCheckpoint/epoch + TensorBoard",
    "bf16": "A bf16 (autocast both sides)",
    "ckpt-steps": "A + LastCheckpoint every 2 steps, background",
    "fsdp-async": "FSDP2 (2 procs, gloo) + async sharded every 10 steps",
    "torchrun": "A, 2 procs (torchrun, gloo), batch callback",
    "dist": "A in a gloo group, world size 1",
}
TINY = ["--rounds", "1", "--warmup", "0", "--epochs", "2", "--steps", "4", "--ckpt-every", "2", "--import-runs", "1"]
QUICK = [*TINY, "--no-instructions"]


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
    result = _run(*QUICK)
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
        rf"^    6 saves a run of \d+ KB: against no checkpoint, synchronous {NUMBER}x \({NUMBER} ms a save\), "
        rf"in the background {NUMBER}x",
        out,
        re.MULTILINE,
    ), out
    assert re.search(rf"^    agreement off: ratio {NUMBER}; the agreement costs [+-]{NUMBER} us a step", out, re.M), out
    for share in ("5%", "95%"):  # the first new batch after a resume, beside a replay, at both positions
        assert re.search(rf"replay at {share} {NUMBER} s \({NUMBER}x\), resume at {share} {NUMBER} s", out), out
    assert "instructions per training step: not counted (--no-instructions)" in out
    assert "the manager trains `Sequential` (it wraps in DDP only when world size > 1)" in out
    assert re.search(rf"raw DDP\(model\) at world size 1 vs raw: ratio {NUMBER}", out), out
    assert re.search(r"^import torchmanager over import torch: -?\d+ ms", out, re.MULTILINE), out
    assert "SUSPICIOUS" not in out


@pytest.mark.slow
def test_rows_picks_the_rows_to_run() -> None:
    result = _run(*QUICK, "--rows", "A", "bf16")
    assert result.returncode == 0, result.stderr
    assert list(_rows(result.stdout)) == [LABELS["A"], LABELS["bf16"]]
    assert "import torchmanager over import torch" not in result.stdout


def test_a_plain_run_counts_the_instructions_of_s_a_and_p_where_valgrind_is() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from overhead import parse_args
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    args = parse_args([])
    assert args.counted_rows == ["S", "A", "P"] and args.skip_counting == valgrind_missing()
    assert "resume" in args.rows and "torchrun" in args.rows
    assert parse_args(["--rows", "B", "callbacks"]).counted_rows == ["B"]
    assert parse_args(["--rows", "callbacks"]).skip_counting == "none of the rows A, B, S, P was picked"
    assert parse_args(["--no-instructions"]).skip_counting == "--no-instructions"


def test_unknown_row_and_zero_rounds_are_refused() -> None:
    result = _run("--rows", "C")
    assert result.returncode == 2 and "invalid choice: 'C'" in result.stderr
    result = _run("--rounds", "0")
    assert result.returncode == 2 and "must be an int >= 1, got 0" in result.stderr


@pytest.mark.skipif(valgrind_missing() is not None, reason=f"no instruction counts here: {valgrind_missing()}")
def test_instruction_mode_refuses_rows_without_a_workload_and_a_single_epoch_count() -> None:
    result = _run("--instructions", "--rows", "callbacks", "import")
    assert result.returncode == 2 and "--instructions counts the rows A, B, S, P; pick one with --rows" in result.stderr
    for epochs in (["2"], ["2", "2"]):
        result = _run("--instructions", "--instr-epochs", *epochs)
        assert result.returncode == 2, result.stdout
        assert f"--instr-epochs needs two different epoch counts, got [{', '.join(epochs)}]" in result.stderr


INSTR_LINE = re.compile(
    rf"^(?P<label>\S.*?)\s+(?P<raw>{NUMBER})\s+(?P<ours>{NUMBER})\s+(?P<ratio>{NUMBER})\s+(?P<framework>{NUMBER}) k"
    rf"\s+(?P<wall>{NUMBER})$"
)
PAIRS = re.compile(
    rf"^    per step between epoch counts 1->2: raw (?P<raw12>{NUMBER}) k, ours (?P<ours12>{NUMBER}) k; "
    rf"2->3: raw (?P<raw23>{NUMBER}) k, ours (?P<ours23>{NUMBER}) k$"
)


@pytest.mark.slow
@pytest.mark.skipif(valgrind_missing() is not None, reason=f"no instruction counts here: {valgrind_missing()}")
def test_instruction_counts_per_step_agree_between_epochs() -> None:
    result = _run(*TINY, "--steps", "8", "--rows", "S", "--instructions", "--instr-epochs", "1", "2", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r"^instructions per training step under callgrind \(valgrind-[\d.]+\): ", result.stdout, re.M)
    rows = [(i, match) for i, line in enumerate(lines) if (match := INSTR_LINE.match(line))]
    assert [match["label"] for _, match in rows] == [LABELS["S"]], result.stdout
    index, row = rows[0]
    raw, ours = float(row["raw"]), float(row["ours"])
    # a training step of this MLP costs between 0.1 and 100 million instructions on either side
    assert 100 < raw < 100_000 and 100 < ours < 100_000, row.groupdict()
    assert float(row["ratio"]) == pytest.approx(ours / raw, abs=1e-3)
    assert float(row["framework"]) == pytest.approx(ours - raw, abs=0.15)
    assert float(row["wall"]) == _rows(result.stdout)[LABELS["S"]]["ratio"]  # the wall-time table's row beside it
    pairs = PAIRS.match(lines[index + 1])
    assert pairs, lines[index + 1]
    for side in ("raw", "ours"):
        # counted only around each run, both differences are the same 8 steps (and an epoch's set-up):
        # a count that took in the start-up (imports, the warm-up) or missed a run would set them far apart
        assert float(pairs[f"{side}23"]) == pytest.approx(float(pairs[f"{side}12"]), rel=0.05), pairs.groupdict()
        assert min(float(pairs[f"{side}12"]), float(pairs[f"{side}23"])) <= float(row[side])
        assert float(row[side]) <= max(float(pairs[f"{side}12"]), float(pairs[f"{side}23"]))


@pytest.mark.skipif(client_requests_unavailable() is not None, reason=f"{client_requests_unavailable()}")
def test_a_client_request_on_a_real_cpu_does_nothing() -> None:
    assert running_on_valgrind() is False
