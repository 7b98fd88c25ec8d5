"""Preemption of a real process: the job (tests/scripts/preempt_train.py, one process) gets SIGTERM, SIGUSR1 or Ctrl-C
at a chosen moment (sent by itself from a callback) or at a random one (sent by this test after it printed a
step), saves, exits with 128 + the signal's number, and the same command run again ends bit-identical
(`torch.equal`, weights and optimizer, and the same summary) to a run that was never interrupted.

Each start draws other random numbers before `fit`, so a resume that took any random state from elsewhere
than the checkpoint would end elsewhere (the last test shows that other draws change the weights). What each
run trained is compared too: the batches the interrupted start trained up to its checkpoint, then those of
the next start, are exactly the uninterrupted run's (every sample once an epoch, in the same order). Most runs
are children of a fork server that imported torch; the first case runs in new interpreters, where the exit
code is the one the operating system reports.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.run_records import Step, assert_same_tensors, started, trajectory
from tests.scripts.fork_server import ForkServer, ForkServers
from tests.workspace import ROOT
from torchmanager_core import checkpoint

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "preempt_train.py"
STEPS = 12  # batches an epoch: 96 samples in batches of 8
EPOCHS = 3
TIMEOUT = 120
EXTERNAL = 4  # signals sent by this test at random moments


@dataclass(frozen=True)
class Case:
    """A preempted start: `signal` is the script's `--send-signal` (None: this test sends SIGTERM after step `after`)."""

    name: str
    accumulate: int
    kind: str  # "experiment" or "last" (the script's --checkpoint)
    stop: tuple[int, int] | None  # (epoch, batches done) where it must stop; None: found from the signal's moment
    signal: str | None = None
    after: int = 0
    fresh: bool = False

    @property
    def signum(self) -> int:
        names = {"USR1": signal.SIGUSR1, "INT": signal.SIGINT}
        return names.get((self.signal or "TERM").split("@")[0], signal.SIGTERM)

    @property
    def exit_code(self) -> int:
        """SIGTERM, SIGUSR1: 128 + the signal. Ctrl-C raises KeyboardInterrupt: a new interpreter then ends by
        SIGINT (-2), a fork server's child reports the uncaught exception (1)."""
        if self.signum == signal.SIGINT:
            return -signal.SIGINT if self.fresh else 1
        return 128 + self.signum


CASES = [
    Case("term-mid-epoch-fresh", 1, "experiment", (1, 5), "TERM@0:2:5", fresh=True),
    Case("usr1-mid-window", 3, "last", (0, 9), "USR1@0:1:7"),  # window of batches 7-9
    Case("term-during-validation", 2, "experiment", (2, 0), "TERM@0:validation:2"),  # at the epoch's end
    Case("term-during-a-checkpoint-write", 1, "experiment", (1, 4), "TERM@0:write:2:4"),
    Case("term-at-the-last-batch", 3, "last", (2, 12), "TERM@0:3:12"),
    Case("ctrl-c-mid-epoch-fresh", 1, "experiment", (1, 5), "INT@0:2:5", fresh=True),  # saved, then KeyboardInterrupt
    Case("ctrl-c-mid-window", 3, "last", (0, 9), "INT@0:1:7"),
    *(  # an epoch's last batch (the signal may come during validation), and random batches
        Case(f"term-from-outside-{i}", 2, "experiment", None, after=after)
        for i, after in enumerate([STEPS, 2 * STEPS, *random.Random(0).sample(range(3, EPOCHS * STEPS - 2), EXTERNAL)])
    ),
]


@dataclass
class Outcome:
    preempted_rc: int
    lines: list[str]  # the preempted start's stdout
    saved: dict[str, Any]  # epoch, step and global step of the checkpoint it left
    resumed_rc: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    starts: int = 0  # how many starts trained
    trajectory: list[Step] = field(default_factory=list)  # what they trained, each batch where it counted


def args(accumulate: int, kind: str, *extra: str) -> list[str]:
    return [".", "--checkpoint", kind, "--accumulate", str(accumulate), "--every", "2", *extra]


def run_fresh(folder: Path, arguments: list[str]) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=TIMEOUT, cwd=folder
    )
    assert done.returncode in (0, 138, 143, -signal.SIGINT), done.stderr
    return done.returncode, done.stdout.splitlines()


def checkpoint_path(folder: Path, kind: str) -> Path:
    return folder / ("experiments/run.exp/checkpoints/last.model" if kind == "experiment" else "checkpoints/last.model")


def preempt_and_resume(runner: ForkServer | None, folder: Path, case: Case, delay: float) -> Outcome:
    folder.mkdir()
    first = args(case.accumulate, case.kind, *(["--send-signal", case.signal] if case.signal else []))
    if runner is None:
        rc, lines = run_fresh(folder, first)
    elif case.signal is None:  # this test sends SIGTERM a moment after the job printed `step <after>`
        first += ["--step-delay", "0.005"]
        rc, lines = runner.run(folder, first, kill_after=f"step {case.after}", delay=delay, signum=signal.SIGTERM)
    else:
        rc, lines = runner.run(folder, first)
    saved = checkpoint.load(checkpoint_path(folder, case.kind))
    outcome = Outcome(rc, lines, {key: saved[key] for key in ("epoch", "step", "global_step")})
    again = args(case.accumulate, case.kind, "--launch", "1")
    outcome.resumed_rc, _ = run_fresh(folder, again) if runner is None else runner.run(folder, again)
    if outcome.resumed_rc == 0:
        outcome.final = torch.load(folder / "final-rank0.pt", weights_only=True)
    outcome.starts, outcome.trajectory = len(started(folder)), trajectory(folder)
    return outcome


def reference(runner: ForkServer | None, folder: Path, accumulate: int, *extra: str) -> dict[str, Any]:
    folder.mkdir()
    arguments = args(accumulate, "last", *extra)
    rc, _ = run_fresh(folder, arguments) if runner is None else runner.run(folder, arguments)
    assert rc == 0, f"see {runner.log if runner else 'stderr'}"
    result: dict[str, Any] = torch.load(folder / "final-rank0.pt", weights_only=True)
    result["trajectory"] = trajectory(folder)
    return result


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[Any, Any], dict[str, Outcome]]]:
    """The uninterrupted references and every preempted and resumed job, on two fork servers and new interpreters."""
    root = tmp_path_factory.mktemp("preempted")
    servers = ForkServers(SCRIPT, root, 2)
    on_a_server = servers.run
    delays = random.Random(1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            references = {
                accumulate: pool.submit(on_a_server, reference, root / f"reference-{accumulate}", accumulate)
                for accumulate in (2, 3)
            }
            references[1] = pool.submit(reference, None, root / "reference-1", 1)  # a new interpreter too
            references["other"] = pool.submit(on_a_server, reference, root / "other-draws", 1, "--seed", "7")
            runs = {
                case.name: pool.submit(preempt_and_resume, None, root / case.name, case, 0.0)
                if case.fresh
                else pool.submit(on_a_server, preempt_and_resume, root / case.name, case, delays.uniform(0, 0.01))
                for case in CASES
            }
            results = {key: future.result() for key, future in references.items()}
            yield results, {name: future.result() for name, future in runs.items()}
    finally:
        servers.close()


def step_lines(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("step ")]


def stop_after(done: int, saved: dict[str, Any]) -> tuple[int, int]:
    """Where a job stopped by a signal this test sent after its last trained batch `done` (counted from 1):
    after that batch, or (for an epoch's last batch, the signal coming during validation) at the epoch's end."""
    epoch, step = divmod(done, STEPS)
    if step:
        return epoch, step
    return (epoch, 0) if saved["step"] == 0 else (epoch - 1, STEPS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_preempted_run_saves_where_it_stopped_and_resumes_bit_identical(
    outcomes: tuple[dict[Any, Any], dict[str, Outcome]], case: Case
) -> None:
    references, results = outcomes
    outcome = results[case.name]
    assert outcome.preempted_rc == case.exit_code
    done = step_lines(outcome.lines)[-1]  # the last batch it trained (counted from 1 over the run)
    if case.stop is None:  # the first update boundary after the signal: a window's end, or an epoch's
        assert done >= case.after and (done % case.accumulate == 0 or done % STEPS == 0)
        stop = stop_after(done, outcome.saved)
    else:
        stop = case.stop
        assert done == stop[0] * STEPS + stop[1]  # nothing trained after the checkpoint
    print(
        f"{case.name}: {'sent after step ' + str(case.after) if case.stop is None else case.signal}, stopped at {stop}"
    )
    windows = -(-STEPS // case.accumulate)  # updates an epoch, the last window maybe shorter
    updates = stop[0] * windows + -(-stop[1] // case.accumulate)
    assert outcome.saved == {"epoch": stop[0], "step": stop[1], "global_step": updates}
    where = f"after batch {stop[1]} of epoch {stop[0] + 1}" if stop[1] else f"at the end of epoch {stop[0]}"
    interrupted = case.signum == signal.SIGINT
    name = "Ctrl-C (SIGINT)" if interrupted else signal.Signals(case.signum).name
    ending = "raising KeyboardInterrupt" if interrupted else f"exiting with code {128 + case.signum}"
    assert (
        f"{name} received: training stopped {where} (optimizer update {updates}), the run was saved to "
        f"{checkpoint_path(Path('.'), case.kind)}; {ending}. Run the same command again to resume."
    ) in outcome.lines

    assert outcome.resumed_rc == 0
    expected = references[case.accumulate]
    assert_same_tensors(expected["model"], outcome.final["model"], "model")
    assert_same_tensors(expected["optimizer"], outcome.final["optimizer"], "optimizer")
    assert outcome.final["summary"] == expected["summary"]  # the interrupted epoch's running values too
    # the batches of both starts, each where it counted, are the uninterrupted run's: each sample once an epoch
    assert outcome.starts == 2 and outcome.trajectory == expected["trajectory"]
    for epoch in range(EPOCHS):
        assert sorted(i for step in outcome.trajectory if step[0] == epoch for i in step[3]) == list(range(96))


def test_other_random_draws_end_elsewhere(outcomes: tuple[dict[Any, Any], dict[str, Outcome]]) -> None:
    references, _ = outcomes
    expected, other = references[1]["model"], references["other"]["model"]
    assert not any(torch.equal(expected[name], other[name]) for name in expected)
