"""Faults under `torchrun --standalone --nproc_per_node=2 --max-restarts=1` (gloo, CPU): the job
(tests/scripts/preempt_train.py with `Experiment(resume="auto")` and a step checkpoint after every optimizer
update, windows of 2 batches) is launched unchanged, a process dies or is signalled in epoch 2, and the run
ends with both ranks' weights and optimizer bit-identical (`torch.equal`) to an uninterrupted two-process run:

- SIGKILL of rank 1 after batch 3 of epoch 2: torchrun restarts the group, which resumes from the last step
  checkpoint (after batch 2);
- rank 0 ended by the kernel (SIGXFSZ, a real file size limit) in the middle of writing the checkpoint after
  batch 4: the partial file is left beside the previous complete checkpoint, which the restart uses;
- SIGTERM to rank 1 alone, inside a window: both ranks agree to stop at the window's end, save, exit 143,
  and torchrun's restart resumes there;
- rank 0's disk refuses the checkpoint after batch 4 (a file size limit): every rank raises the same
  `CheckpointWriteError` (rank 0's, shared with the others instead of a barrier), and the restart resumes
  from the intact checkpoint before it;
- SIGTERM to torchrun itself (what a scheduler sends), at a moment this test picks from the output: torchrun
  passes it to the workers, which stop at the same update and save; the command launched again (with
  `--launch 1`, which only changes the random draws before `fit`) resumes.

Every start draws other random numbers before `fit`, and what each rank trained over the starts (each batch
where it counted) is the uninterrupted run's: every sample once in every epoch, in the same order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.run_records import assert_same_tensors, started, trajectory
from tests.workspace import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "preempt_train.py"
TIMEOUT = 240  # seconds for a launch and its restart on a loaded machine
JOB = ["--checkpoint", "experiment", "--accumulate", "2", "--every", "1"]
STEPS, EPOCHS = 6, 3  # batches an epoch on each rank (96 samples, 8 a batch, 2 ranks)


def launch(out: Path, *args: str, term_after: str | None = None) -> tuple[int, str]:
    """Run the job under torchrun in `out` (SIGTERM to torchrun once a line `term_after` is printed); its exit
    code and output."""
    env = {**os.environ, "TORCHMANAGER_DIST_TIMEOUT": "30", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    process = subprocess.Popen(
        [*command, str(SCRIPT), str(out), *JOB, *args],
        cwd=out,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if term_after is not None and line.strip() == term_after:
                process.send_signal(signal.SIGTERM)
                term_after = None
        process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers: the session started above
        pytest.fail(f"torchrun hung for {TIMEOUT} s:\n{''.join(lines)}")
    return process.returncode, "".join(lines)


def run_case(root: Path, name: str, *args: str, term_after: str | None = None) -> dict[str, Any]:
    out = root / name
    out.mkdir()
    rc, output = launch(out, *args, term_after=term_after)
    result: dict[str, Any] = {"out": out, "rc": [rc], "output": output}
    if term_after is not None:  # the scheduler's second submission: the same command again
        rc, again = launch(out, *args, "--launch", "1")
        result["rc"].append(rc)
        result["output"] += again
    finals = [out / f"final-rank{rank}.pt" for rank in (0, 1)]
    assert all(final.exists() for final in finals), f"`{name}` did not finish: {result['rc']}\n{result['output']}"
    result["final"] = [torch.load(final, weights_only=True) for final in finals]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("torchrun-restarts")
    cases = {
        "reference": (),
        "kill-rank-1": ("--kill", "1:2:3"),
        "kill-rank-0-in-a-write": ("--kill-in-write", "0:2:4"),
        "sigterm-rank-1": ("--send-signal", "TERM@1:2:3"),
        "sigterm-torchrun": ("--step-delay", "0.05"),
        "disk-refuses-rank-0": ("--fsize", "0:2:4"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(run_case, root, name, *args, term_after="step 9" if name == "sigterm-torchrun" else None)
            for name, args in cases.items()
        }
        yield {name: future.result() for name, future in futures.items()}


def first_batch(run: dict[str, Any], start: int) -> tuple[int, int, int]:
    """(epoch, batch, updates before it) of the first batch a start trained, the same on both ranks."""
    firsts = {started(run["out"], rank)[start][0][:3] for rank in (0, 1)}
    assert len(firsts) == 1, firsts
    return firsts.pop()


def assert_ends_like_the_reference(runs: dict[str, dict[str, Any]], name: str) -> None:
    """Both ranks' weights and optimizer bit-identical to the uninterrupted run's, and the same batches trained."""
    reference, run = runs["reference"], runs[name]
    for rank in (0, 1):
        assert_same_tensors(reference["final"][rank]["model"], run["final"][rank]["model"], f"rank {rank} model")
        assert_same_tensors(
            reference["final"][rank]["optimizer"], run["final"][rank]["optimizer"], f"rank {rank} optimizer"
        )
        assert run["final"][rank]["global_step"] == EPOCHS * STEPS // 2
        assert trajectory(run["out"], rank) == trajectory(reference["out"], rank)
    for epoch in range(EPOCHS):  # the two ranks' shares of an epoch: every sample once
        ids = [i for rank in (0, 1) for step in trajectory(run["out"], rank) if step[0] == epoch for i in step[3]]
        assert sorted(ids) == list(range(96))


def test_the_reference_trains_two_shards(runs: dict[str, dict[str, Any]]) -> None:
    reference = runs["reference"]
    assert reference["rc"] == [0] and len(started(reference["out"])) == 1
    for epoch in range(EPOCHS):
        shards = [
            {i for step in trajectory(reference["out"], rank) if step[0] == epoch for i in step[3]} for rank in (0, 1)
        ]
        assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 48


def test_a_killed_worker_is_restarted_and_resumes_from_the_last_step_checkpoint(
    runs: dict[str, dict[str, Any]],
) -> None:
    run = runs["kill-rank-1"]
    assert run["rc"] == [0], run["output"]
    assert "exitcode: -9" in run["output"]  # torchrun saw rank 1 killed, and restarted the group
    assert len(started(run["out"], 1)[0]) == STEPS + 3  # it died after batch 3 of epoch 2
    assert first_batch(run, 1) == (1, 2, 4)  # the checkpoint of the update after batch 2
    assert_ends_like_the_reference(runs, "kill-rank-1")


def test_rank_0_killed_while_writing_leaves_the_previous_checkpoint_which_the_restart_uses(
    runs: dict[str, dict[str, Any]],
) -> None:
    run = runs["kill-rank-0-in-a-write"]
    assert run["rc"] == [0], run["output"]
    assert f"exitcode: -{int(signal.SIGXFSZ)}" in run["output"]
    files = (run["out"] / "files-rank0-start1.txt").read_text().split()
    partial = [name for name in files if name.startswith(".last.model.") and name.endswith(".tmp")]
    assert len(partial) == 1 and "last.model" in files  # the interrupted write, beside the complete checkpoint
    assert first_batch(run, 1) == (1, 2, 4)  # so the restart resumed from the update before it
    assert_ends_like_the_reference(runs, "kill-rank-0-in-a-write")
    folder = run["out"] / "experiments" / "run.exp" / "checkpoints"
    assert sorted(os.listdir(folder)) == ["last.model"]  # the next complete write removed the partial file


def test_sigterm_to_one_worker_stops_both_at_the_same_update_and_the_restart_resumes_there(
    runs: dict[str, dict[str, Any]],
) -> None:
    run = runs["sigterm-rank-1"]
    assert run["rc"] == [0], run["output"]
    assert run["output"].count("exitcode: 143") >= 1
    line = (
        "SIGTERM received: training stopped after batch 4 of epoch 2 (optimizer update 5), the run was saved to "
        f"{run['out']}/experiments/run.exp/checkpoints/last.model; exiting with code 143."
    )
    assert run["output"].count(line) == 1  # rank 0 logs, once, though rank 1 got the signal
    assert [len(started(run["out"], rank)[0]) for rank in (0, 1)] == [STEPS + 4] * 2  # the window's end, on both
    assert first_batch(run, 1) == (1, 4, 5)
    assert_ends_like_the_reference(runs, "sigterm-rank-1")


def test_sigterm_to_torchrun_saves_and_the_same_command_resumes(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["sigterm-torchrun"]
    assert run["rc"][0] != 0 and run["rc"][1] == 0, run["output"]
    assert run["output"].count("SIGTERM received: training stopped after batch") == 1
    trained = [len(started(run["out"], rank)[0]) for rank in (0, 1)]
    assert trained[0] == trained[1] and trained[0] % 2 == 0  # both at the same window's end
    assert first_batch(run, 1) == (*divmod(trained[0], STEPS), trained[0] // 2)  # where they stopped
    assert_ends_like_the_reference(runs, "sigterm-torchrun")


def test_a_checkpoint_refused_on_rank_0_stops_every_rank_with_its_error_and_the_restart_resumes(
    runs: dict[str, dict[str, Any]],
) -> None:
    run = runs["disk-refuses-rank-0"]
    assert run["rc"] == [0], run["output"]
    error = (
        "torchmanager_core.checkpoint.CheckpointWriteError: Cannot save checkpoint "
        f"`{run['out']}/experiments/run.exp/checkpoints/last.model`: writing it failed (File too large)"
    )
    for rank in (0, 1):  # the same error on both: rank 1 did not wait at a barrier rank 0 never reached
        assert f"[rank{rank}]: {error}" in run["output"]
    assert first_batch(run, 1) == (1, 2, 4)  # the checkpoint before the refused one
    assert_ends_like_the_reference(runs, "disk-refuses-rank-0")
