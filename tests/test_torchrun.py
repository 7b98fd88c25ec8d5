"""Under `torchrun --nproc_per_node=2` on the CPU (gloo) a manager trains like one process over the same data.

Four launches (each torchrun start costs seconds): `tests/scripts/ddp_train.py` trains four
small models (a shuffled torchmanager `Dataset` with validation, an `Experiment` and a `test`; a
`DataLoader(shuffle=True)`; a list of batches; gradient accumulation), `tests/scripts/ddp_fail.py`
fails or gets stuck on rank 1, and the digits example runs unchanged. The last tests call
`training_shards.shard` in this process as each rank of two would, for loaders it cannot shard as is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from tests.workspace import ROOT
from torchmanager_core import distributed, training_shards

SCRIPTS = ROOT / "tests" / "scripts"
BATCH, EPOCHS, LR, MOMENTUM = 8, 3, 0.1, 0.9  # those of ddp_train.py
TIMEOUT = 300  # seconds for a whole launch: a hang guard, far above a launch's time on a loaded machine
DIST_TIMEOUT = 120  # seconds a collective waits for a slow rank (TORCHMANAGER_DIST_TIMEOUT), below TIMEOUT


def torchrun(
    script: Path | str,
    *args: str,
    cwd: Path,
    dist_timeout: int = DIST_TIMEOUT,
    launcher: str = "torch.distributed.run",
    env: dict[str, str] | None = None,
    processes: int = 2,
) -> subprocess.CompletedProcess[str]:
    """Run `script` under `torchrun --standalone --nproc_per_node=processes` (or another `launcher` module
    taking torchrun's arguments); kill the whole launch if it hangs."""
    env = {**os.environ, "TORCHMANAGER_DIST_TIMEOUT": str(dist_timeout), "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", launcher, "--standalone", f"--nproc_per_node={processes}", str(script), *args]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers: the session started above
        stdout, stderr = process.communicate()
        pytest.fail(f"`{script}` under torchrun hung for {TIMEOUT} s.\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One launch of ddp_train.py: its output folder, console text, inputs and each rank's results."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(SCRIPTS / "ddp_train.py", str(out), cwd=out)
    assert done.returncode == 0, done.stderr
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    inputs = torch.load(out / "inputs.pt", weights_only=True)
    return {"out": out, "console": done.stdout + done.stderr, "ranks": ranks, "inputs": inputs}


@pytest.mark.slow
def test_both_ranks_end_with_identical_weights(run: dict[str, Any]) -> None:
    rank0, rank1 = run["ranks"]
    for phase in ("dataset", "loader", "list", "accumulate"):
        assert rank0["states"][phase].keys() == rank1["states"][phase].keys()
        for name, tensor in rank0["states"][phase].items():
            assert torch.equal(tensor, rank1["states"][phase][name]), (phase, name)
        initial = run["inputs"]["initial"]
        assert not torch.equal(rank0["states"][phase]["1.weight"], initial["1.weight"]), phase  # it did train


def _forward(params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ddp_train.py's model, by hand: drop the id column, Linear(6, 16), tanh, Linear(16, 3)."""
    hidden = torch.tanh(F.linear(x[:, 1:], params["1.weight"], params["1.bias"]))
    return F.linear(hidden, params["3.weight"], params["3.bias"])


def _evaluate(params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        out = _forward(params, x)
        return {"loss": F.cross_entropy(out, y).item(), "accuracy": (out.argmax(1) == y).float().mean().item()}


def _train_by_hand(
    run: dict[str, Any], phase: str, epochs: int, *, window: int = 1
) -> tuple[list[dict[str, dict[str, float]]], dict[str, torch.Tensor]]:
    """SGD with momentum in one process, each update over all the samples the two ranks' update had.

    DDP averages the two ranks' gradients, each the mean over BATCH samples: that is the gradient of
    the mean loss over the 2 * BATCH samples of the step together, so the weights follow the same
    path. With gradient accumulation an update covers `window` steps of both ranks (each batch's
    loss divided by the window's length, an epoch's last window being shorter): again the mean loss
    over all its samples, whose weights do not change within the window. Returns each epoch's
    training summary (and validation one for "dataset") and the final weights.
    """
    (x, y), (x_val, y_val) = run["inputs"]["data"]["train"], run["inputs"]["data"]["val"]
    params = {name: tensor.clone().requires_grad_() for name, tensor in run["inputs"]["initial"].items()}
    velocity = {name: torch.zeros_like(tensor) for name, tensor in params.items()}
    seen0, seen1 = (rank["seen"][phase] for rank in run["ranks"])
    summaries = []
    for epoch in range(epochs):
        steps = list(zip(seen0[epoch], seen1[epoch], strict=True))
        loss_sum, correct, count = 0.0, 0, 0
        for start in range(0, len(steps), window):
            ids = torch.tensor([i for step in steps[start : start + window] for batch in step for i in batch])
            out = _forward(params, x[ids])  # the ids are the row indices
            loss = F.cross_entropy(out, y[ids])
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for (name, param), grad in zip(params.items(), grads, strict=True):
                    velocity[name] = MOMENTUM * velocity[name] + grad  # torch's SGD: the first buffer is the gradient
                    param -= LR * velocity[name]
            loss_sum += loss.item() * len(ids)
            correct += int((out.argmax(1) == y[ids]).sum())
            count += len(ids)
        summary = {"train": {"loss": loss_sum / count, "accuracy": correct / count}}
        if phase == "dataset":
            summary["val"] = _evaluate(params, x_val, y_val)
        summaries.append(summary)
    return summaries, {name: p.detach() for name, p in params.items()}


@pytest.mark.slow
def test_summaries_equal_a_single_process_run_over_the_same_steps(run: dict[str, Any]) -> None:
    """What is compared, and why it must be equal.

    The ranks train on a shuffled `Dataset` of 96 samples, 8 a step each (96 divides by the 2
    ranks, so DistributedSampler pads nothing and each sample counts once), validate on 32 and
    test on 40 (5 batches of 8, dealt out 3 and 2: evaluation never pads). The reference is one process, by hand, with steps
    of 16 samples: the two ranks' batches of the same step (read from the ids they recorded, so the
    global order is the same; `test_dataset_loader_and_list_of_batches_are_sharded` checks that
    those ids are disjoint and complete). Then the weights, the training loss and accuracy of each
    epoch (means over the epoch's 96 samples, measured before each step's update), the validation
    values and `test()` are all equal to float tolerance, on both ranks, because the manager
    reduces the metric states over the ranks before reading them. Summaries of one rank's shard
    alone would differ. The same holds with `accumulate_grad_batches=4` (DDP's `no_sync` within a
    window), whose 6 steps a rank and epoch make windows of 4 and 2.
    """
    epochs, weights = _train_by_hand(run, "dataset", EPOCHS)
    x_test, y_test = run["inputs"]["data"]["test"]
    test_summary = _evaluate(weights, x_test, y_test)
    accumulated_epochs, accumulated_weights = _train_by_hand(run, "accumulate", 2, window=4)
    for rank in run["ranks"]:
        for phase, reference in (("dataset", epochs), ("accumulate", accumulated_epochs)):
            assert len(rank["epochs"][phase]) == len(reference)
            for ours, expected in zip(rank["epochs"][phase], reference, strict=True):
                assert ours.keys() >= expected.keys()
                for part in expected:
                    assert ours["train"]["lr"] == 0.1  # the loop reports the learning rate too
                    values = {name: ours[part][name] for name in expected[part]}
                    assert values == pytest.approx(expected[part], rel=1e-5, abs=1e-6), (phase, part)
        assert rank["test"] == pytest.approx(test_summary, rel=1e-5, abs=1e-6)
        last = rank["epochs"]["dataset"][-1]
        assert rank["fit"] == pytest.approx({**last["train"], **{f"val_{k}": v for k, v in last["val"].items()}})
        for phase, expected_weights in (("dataset", weights), ("accumulate", accumulated_weights)):
            for name, tensor in expected_weights.items():
                torch.testing.assert_close(rank["states"][phase][name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_only_rank_0_writes_the_experiment_and_the_log(run: dict[str, Any]) -> None:
    rank0, rank1 = run["ranks"]
    exp = run["out"] / "experiments" / "run.exp"
    assert [p.name for p in exp.parent.iterdir()] == ["run.exp"]
    files = sorted(
        str(p.relative_to(exp)) for p in exp.rglob("*") if p.is_file() and p.relative_to(exp).parts[0] != "data"
    )
    assert files == [
        "checkpoints/best-accuracy.model",
        "checkpoints/best_accuracy.model",  # upstream's name, a link to the same file
        "checkpoints/last.model",
        "run.log",
    ]  # no leftover temporary files

    assert rank1["saves"] == []  # rank 1 wrote no checkpoint; rank 0 wrote last.model once an epoch
    assert sorted(rank0["saves"]).count(str(exp / "checkpoints" / "last.model")) == EPOCHS
    assert set(rank0["saves"]) == {
        str(exp / "checkpoints" / "last.model"),
        str(exp / "checkpoints" / "best-accuracy.model"),
    }
    last = torch.load(exp / "checkpoints" / "last.model", weights_only=True)
    assert last["epoch"] == EPOCHS
    for name, tensor in rank0["states"]["dataset"].items():
        assert torch.equal(last["model"][name], tensor)

    events = [p.name for p in (exp / "data").rglob("events.out.tfevents.*")]
    assert events and {int(name.split(".")[-2]) for name in events} == {
        rank0["pid"]
    }  # TensorBoard: rank 0's files only

    log = (exp / "run.log").read_text()
    for text in (log, run["console"]):
        assert [len(re.findall(rf"Epoch {e}/{EPOCHS}: loss=", text)) for e in range(1, EPOCHS + 1)] == [1] * EPOCHS
    assert log.count("Experiment run: training ended") == 1


def _check_shards(seen: list[dict[int, list[list[int]]]], size: int, epochs: int) -> None:
    """Per epoch the ranks ran as many batches, on disjoint samples that together cover all `size`."""
    for epoch in range(epochs):
        shards = [[i for batch in rank[epoch] for i in batch] for rank in seen]
        assert len(seen[0][epoch]) == len(seen[1][epoch])
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(size))


@pytest.mark.slow
def test_dataset_loader_and_list_of_batches_are_sharded(run: dict[str, Any]) -> None:
    seen = {
        phase: [rank["seen"][phase] for rank in run["ranks"]] for phase in ("dataset", "loader", "list", "accumulate")
    }
    _check_shards(seen["dataset"], 96, EPOCHS)
    _check_shards(seen["accumulate"], 96, 2)
    _check_shards(seen["loader"], 24, 2)
    _check_shards(seen["list"], 24, 1)
    for phase in ("dataset", "loader"):  # shuffled: a new order each epoch (DistributedSampler.set_epoch)
        assert seen[phase][0][0] != seen[phase][0][1]
        assert sorted(i for batch in seen[phase][0][0] for i in batch) != list(
            range(0, 96 if phase == "dataset" else 24, 2)
        )
    # a list is split batch by batch: whole batches of 4, alternating between the ranks
    assert seen["list"][0][0] == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    assert seen["list"][1][0] == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]


@pytest.mark.slow
def test_a_failing_rank_ends_the_launch_with_its_error(tmp_path: Path) -> None:
    done = torchrun(SCRIPTS / "ddp_fail.py", str(tmp_path), "raise", cwd=tmp_path)  # fails the test if it hangs
    assert done.returncode != 0
    assert "RuntimeError: rank 1 failed on purpose when epoch 2 started" in done.stderr
    assert not list(tmp_path.glob("rank*-finished"))
    assert "Epoch 1/3: loss=" in done.stdout + done.stderr and "Epoch 2/3" not in done.stdout + done.stderr


@pytest.mark.slow
def test_one_rank_stopping_at_an_epoch_end_stops_them_all(tmp_path: Path) -> None:
    """Rank 1 alone raises StopTraining when epoch 1 ends: both ranks stop there and return cleanly."""
    done = torchrun(SCRIPTS / "ddp_fail.py", str(tmp_path), "stop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.read_text() for p in tmp_path.glob("rank*-finished")) == ["1", "1"]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "steps"), [("stop-flag", 4 + 3), ("stop-raise", 4 + 4)])
def test_one_rank_stopping_mid_epoch_stops_them_all_after_the_same_batch(tmp_path: Path, mode: str, steps: int) -> None:
    """Rank 0 sets the stop flag after batch 1 of epoch 2 (or rank 1 raises StopTraining after batch 2):
    both ranks stop after the next batch (4 batches a rank and epoch; the processes agree in the background,
    so no step waits on a collective) with the same weights and exit cleanly, instead of one waiting in a
    collective the other never joins. ("stop-raise" stops at the epoch's last batch: the epoch ends.)"""
    done = torchrun(SCRIPTS / "ddp_fail.py", str(tmp_path), mode, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.read_text() for p in tmp_path.glob("rank*-finished")) == [str(steps)] * 2
    weights = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name])


@pytest.mark.slow
def test_a_stuck_rank_ends_the_launch_after_the_collective_timeout(tmp_path: Path) -> None:
    """Rank 1 blocks for 10 minutes in a callback: rank 0's gradient all-reduce gives up after
    `TORCHMANAGER_DIST_TIMEOUT` (5 s here) with an error, and torchrun then ends rank 1. (Without
    either, the launch would outlast `TIMEOUT`, which fails the test.)"""
    done = torchrun(SCRIPTS / "ddp_fail.py", str(tmp_path), "hang", cwd=tmp_path, dist_timeout=5)
    assert done.returncode != 0
    assert re.search(r"\[rank0\]: RuntimeError: .*Timed out waiting 5000ms", done.stderr), done.stderr
    assert not list(tmp_path.glob("rank*-finished"))


@pytest.mark.slow
def test_digits_example_runs_unchanged_under_torchrun(tmp_path: Path) -> None:
    """Launched as the README does it, by `torchmanager-run` (torchrun, its workers started by `run_worker`)."""
    done = torchrun(
        ROOT / "examples" / "digits.py",
        "--quiet",
        "--experiment",
        "demo",
        cwd=tmp_path,
        launcher="torchmanager_core.launch",
    )
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    accuracies = re.findall(r"test accuracy (\d\.\d+)", console)
    assert len(accuracies) == 1 and float(accuracies[0]) > 0.95
    assert [p.name for p in (tmp_path / "experiments").iterdir()] == ["demo.exp"]
    exp = tmp_path / "experiments" / "demo.exp"
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == [
        "best-accuracy.model",
        "best_accuracy.model",
        "last.model",
    ]
    events = [p.name for p in (exp / "data").rglob("events.out.tfevents.*")]
    assert events and len({name.split(".")[-2] for name in events}) == 1  # one process wrote TensorBoard data
    log = (exp / "demo.log").read_text()
    for text in (log, console):
        assert [len(re.findall(rf"Epoch {e}/30: loss=", text)) for e in (1, 15, 30)] == [1, 1, 1]
    assert len(re.findall(r"Epoch \d+/30: loss=", log)) == 30

    first_run = (exp / "checkpoints" / "last.model").read_bytes()
    again = torchrun(ROOT / "examples" / "digits.py", "--quiet", "--experiment", "demo", "--epochs", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # the same command again: a new numbered folder, the first run kept
    assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == ["demo-2.exp", "demo.exp"]
    assert (exp / "checkpoints" / "last.model").read_bytes() == first_run
    assert "this run is kept in 'experiments/demo-2.exp'" in again.stdout + again.stderr
    assert (tmp_path / "experiments" / "demo-2.exp" / "checkpoints" / "last.model").is_file()


def _shard_as_each_rank(make_loader: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The batches `training_shards.shard` gives each rank of 2 (the rank and world size patched in, as torchrun sets them)."""
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        shards.append(list(training_shards.shard(make_loader())))
    return shards


SIXTEEN = TensorDataset(torch.arange(16.0), torch.arange(16))


def test_a_loader_with_a_batch_sampler_is_sharded_in_whole_batches_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> DataLoader[Any]:
        return DataLoader(SIXTEEN, batch_sampler=BatchSampler(SequentialSampler(SIXTEEN), 4, drop_last=False))

    try:
        shards = _shard_as_each_rank(make, monkeypatch)
    except TypeError as error:
        assert "batch_sampler" in str(error) and "Received: " in str(error)
        return
    assert [[tuple(x.shape) for x, _ in shard] for shard in shards] == [[(4,), (4,)], [(4,), (4,)]]
    ids = [[int(i) for x, _ in shard for i in x] for shard in shards]
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == list(range(16))


def test_a_loader_with_its_own_sampler_keeps_it_or_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> DataLoader[Any]:
        return DataLoader(SIXTEEN, batch_size=4, sampler=WeightedRandomSampler([1.0] * 8 + [0.0] * 8, 16))

    try:
        shards = _shard_as_each_rank(make, monkeypatch)
    except TypeError as error:
        assert "sampler" in str(error) and "Received: " in str(error)
        return
    assert all(int(i) < 8 for shard in shards for x, _ in shard for i in x)  # weight 0: never drawn


class _Stream(IterableDataset):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter([(torch.tensor(float(i)), i) for i in range(16)])


def test_a_loader_over_an_iterable_dataset_is_refused_in_the_house_format(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match=r"cannot be split.*Received: dataset="):
        _shard_as_each_rank(lambda: DataLoader(_Stream(), batch_size=4), monkeypatch)


def test_a_plain_loader_is_sharded_like_a_distributed_sampler_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference for the rank patching above: an unshuffled loader's ranks take every other sample."""
    shards = _shard_as_each_rank(lambda: DataLoader(SIXTEEN, batch_size=4), monkeypatch)
    assert [[x.tolist() for x, _ in shard] for shard in shards] == [
        [[0, 2, 4, 6], [8, 10, 12, 14]],
        [[1, 3, 5, 7], [9, 11, 13, 15]],
    ]
