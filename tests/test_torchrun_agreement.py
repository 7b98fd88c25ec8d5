"""Under torchrun every process takes the same decisions and makes the same collectives (issue 20 kind 3, issue 23
point 12), on 2 and 3 gloo processes.

Two launches of `tests/scripts/torchrun_agreement.py` (2 and 3 processes; see it for the cases). Every value is
compared with one process's, computed here by hand (torch.nn.functional, SGD written out) from the inputs and
the batches each rank recorded: one optimizer update of DDP is the gradient of the mean loss over the batches of
all ranks at that step, so a hand loop over those batches together follows the same weights. The last tests
split or share data as each rank would, with the rank and world size patched in (as torchrun sets them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from tests.scripts import torchrun_agreement as script
from tests.test_torchrun import SCRIPTS, torchrun
from torchmanager_core import distributed, evaluation_shards, training_shards

Weights = dict[str, torch.Tensor]


@pytest.fixture(scope="module", params=[2, 3], ids=["2 processes", "3 processes"])
def launch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = request.param
    out = tmp_path_factory.mktemp(f"agreement{world}")
    done = torchrun(SCRIPTS / "torchrun_agreement.py", str(out), cwd=out, processes=world)
    assert done.returncode == 0, done.stderr[-5000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
    return {"world": world, "out": out, "ranks": ranks, "inputs": torch.load(out / "inputs.pt", weights_only=False)}


def _values(params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        out = F.linear(x, params["weight"], params["bias"])
        return {"loss": F.cross_entropy(out, y).item(), "accuracy": (out.argmax(1) == y).double().mean().item()}


def _sgd_by_hand(
    initial: Weights, ranks_seen: Sequence[list[Any]], epochs: int
) -> tuple[list[dict[str, float]], list[Weights]]:
    """Plain SGD in one process, each update over the batches all ranks stepped on at that step together.

    Returns each epoch's training loss and accuracy (sample-weighted means before each update) and the weights
    after each epoch.
    """
    params = {name: tensor.clone().requires_grad_() for name, tensor in initial.items()}
    steps = len(ranks_seen[0]) // epochs
    summaries, after = [], []
    for epoch in range(epochs):
        loss_sum, correct, count = 0.0, 0, 0
        for step in range(epoch * steps, (epoch + 1) * steps):
            x = torch.cat([seen[step][0] for seen in ranks_seen])
            y = torch.cat([seen[step][1] for seen in ranks_seen])
            out = F.linear(x, params["weight"], params["bias"])
            loss = F.cross_entropy(out, y)
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for param, grad in zip(params.values(), grads, strict=True):
                    param -= script.LR * grad
            loss_sum, correct, count = (
                loss_sum + loss.item() * len(y),
                correct + int((out.argmax(1) == y).sum()),
                count + len(y),
            )
        summaries.append({"loss": loss_sum / count, "accuracy": correct / count})
        after.append({name: p.detach().clone() for name, p in params.items()})
    return summaries, after


def _assert_weights(ours: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    assert ours.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-5, atol=1e-6)


# -- every reduction is right when a rank has no batch ----------------------------------------------------


def _reductions_by_hand(
    params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int, world: int
) -> dict[str, float]:
    """The metrics of `torchrun_agreement.reduction_metrics` over the whole data set, as one process reads them;
    "rank_mean" (a "mean" state, torchmetrics' convention) averages the ranks that had a batch, each its mean of
    its batch means (batch i on rank i mod world)."""
    with torch.no_grad():
        out = F.linear(x, params["weight"], params["bias"])
    batches = [out[i : i + batch, 0].mean().item() for i in range(0, len(y), batch)]
    per_rank = [batches[rank::world] for rank in range(world) if batches[rank::world]]
    return {
        **_values(params, x, y),
        "median": out[:, 0].median().item(),
        "highest": (out - 100).amax(0).sum().item(),
        "lowest": (out + 100).amin(0).sum().item(),
        "rank_mean": sum(sum(means) / len(means) for means in per_rank) / len(per_rank),
    }


@pytest.mark.slow
def test_every_reduction_is_right_on_every_rank_when_a_rank_has_no_batch(launch: dict[str, Any]) -> None:
    """3 samples in one batch (only rank 0 has it), 5 in 2 (rank 2 of 3 has none), 9 in 5; "cat", "max" and "min"
    states would take a blank rank's zeros, a "mean" state was not reduced at all."""
    initial = launch["inputs"]["initial"]
    for n, batch in script.EVAL_SIZES:
        expected = _reductions_by_hand(initial, *launch["inputs"]["eval"][n], batch, launch["world"])
        for rank in launch["ranks"]:
            assert rank["test"][n, batch] == pytest.approx(expected, rel=1e-5), (n, batch)


@pytest.mark.slow
def test_validation_with_one_batch_reduces_every_kind_right_each_epoch(launch: dict[str, Any]) -> None:
    x, y = script.make_data(4, 1)  # every rank trains on this one batch: DDP's mean is its gradient
    _, after = _sgd_by_hand(launch["inputs"]["initial"], [[(x, y)] * 2], 2)
    x_val, y_val = script.make_data(3, 13)
    for rank in launch["ranks"]:
        epochs = rank["validation"]["epochs"]
        for weights, summary in zip(after, epochs, strict=True):
            expected = _reductions_by_hand(weights, x_val, y_val, 3, launch["world"])
            assert {k.removeprefix("val_"): v for k, v in summary.items() if k.startswith("val_")} == pytest.approx(
                expected, rel=1e-5
            )
        _assert_weights(rank["validation"]["weights"], after[-1])


@pytest.mark.slow
def test_a_frozen_model_is_tested_and_predicted_under_torchrun(launch: dict[str, Any]) -> None:
    initial = launch["inputs"]["initial"]
    x, y = script.make_data(9, 19)
    expected = _reductions_by_hand(initial, x, y, 2, launch["world"])
    outputs = [F.linear(x[i : i + 2], initial["weight"], initial["bias"]) for i in range(0, 9, 2)]
    for rank in launch["ranks"]:
        assert rank["frozen"]["test"] == pytest.approx(expected, rel=1e-5)
        assert len(rank["frozen"]["predict"]) == len(outputs)
        for ours, theirs in zip(rank["frozen"]["predict"], outputs, strict=True):
            torch.testing.assert_close(ours, theirs)


# -- the user's own DistributedSampler ------------------------------------------------------------------


def _ids(x: torch.Tensor, data: torch.Tensor) -> list[int]:
    """The rows of `data` that `x`'s rows are."""
    return [int((data == row).all(1).nonzero()) for row in x]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sampler", "batch_sampler", "own_batch_sampler"])
def test_a_loader_the_user_sharded_is_kept_told_the_epoch_and_evaluated_once_a_sample(
    launch: dict[str, Any], kind: str
) -> None:
    """Their shuffled `DistributedSampler(seed=3)`, as the sampler, in torch's `BatchSampler` or in a batch sampler
    of their own: each rank trains on the share torch documents for the epoch (`randperm` seeded by seed + epoch,
    items `rank::world`), so the epoch was told; validation counts each of the 12 samples once."""
    world, (x, _), (x_val, y_val) = launch["world"], launch["inputs"]["train"], launch["inputs"]["val"]
    seen = [rank["user"][kind]["seen"] for rank in launch["ranks"]]
    steps = script.TRAIN_SIZE // world // script.BATCH
    for rank, batches in enumerate(seen):
        assert len(batches) == 2 * steps
        for epoch in range(2):
            order = torch.randperm(script.TRAIN_SIZE, generator=torch.Generator().manual_seed(3 + epoch))
            share = order[rank::world].tolist()
            ids = [i for bx, _ in batches[epoch * steps : (epoch + 1) * steps] for i in _ids(bx, x)]
            assert (sorted(ids) if kind == "own_batch_sampler" else ids) == (
                sorted(share) if kind == "own_batch_sampler" else share
            )
    summaries, after = _sgd_by_hand(launch["inputs"]["initial"], seen, 2)
    for rank in launch["ranks"]:
        for summary, train, weights in zip(rank["user"][kind]["epochs"], summaries, after, strict=True):
            assert {k: summary[k] for k in train} == pytest.approx(train, rel=1e-5)
            validation = {k: summary[f"val_{k}"] for k in ("loss", "accuracy")}
            assert validation == pytest.approx(_values(weights, x_val, y_val), rel=1e-5)
        _assert_weights(rank["user"][kind]["weights"], after[-1])


# -- data that shards itself --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stream_that_shards_itself_trains_in_step_and_evaluates_every_sample(launch: dict[str, Any]) -> None:
    """11 chunks of 4 on 2 processes are 6 and 5 (on 3: 4, 4, 3): every rank trains as many steps as the shortest
    share, on its own chunks, told the epoch; validation, `test` and `predict` take every chunk once."""
    world, ranks = launch["world"], launch["ranks"]
    (x, _), (x_val, y_val) = launch["inputs"]["stream_train"], launch["inputs"]["stream_val"]
    steps = min(len(script.stream_chunks(script.STREAM_CHUNKS, 0, r, world)) for r in range(world))
    seen = [rank["stream"]["seen"] for rank in ranks]
    for rank, batches in enumerate(seen):
        assert ranks[rank]["stream"]["told"] == [0, 1]
        assert len(batches) == 2 * steps
        for epoch in range(2):
            mine = set(script.stream_chunks(script.STREAM_CHUNKS, epoch, rank, world))
            for bx, _ in batches[epoch * steps : (epoch + 1) * steps]:
                ids = _ids(bx, x)
                assert ids == list(range(ids[0], ids[0] + script.CHUNK)) and ids[0] // script.CHUNK in mine
    summaries, after = _sgd_by_hand(launch["inputs"]["initial"], seen, 2)
    order = [c for r in range(world) for c in script.stream_chunks(script.STREAM_VAL_CHUNKS, 0, r, world)]
    rows = torch.tensor([i for c in order for i in range(c * script.CHUNK, (c + 1) * script.CHUNK)])
    for rank in ranks:
        for summary, train, weights in zip(rank["stream"]["epochs"], summaries, after, strict=True):
            assert {k: summary[k] for k in train} == pytest.approx(train, rel=1e-5)
            assert {k: summary[f"val_{k}"] for k in train} == pytest.approx(_values(weights, x_val, y_val), rel=1e-5)
        _assert_weights(rank["stream"]["weights"], after[-1])
        assert rank["stream"]["test"] == pytest.approx(_values(after[-1], x_val, y_val), rel=1e-5)
        predicted = torch.cat(rank["stream"]["predict"])  # rank 0's batches first, each rank's in its order
        torch.testing.assert_close(predicted, F.linear(x_val[rows], after[-1]["weight"], after[-1]["bias"]))


# -- loader processes live across evaluations ---------------------------------------------------------


@pytest.mark.slow
def test_evaluation_loader_processes_are_started_once_and_values_stay_exact(launch: dict[str, Any]) -> None:
    """3 validations and 2 `test()` calls on a loader with 2 processes (not persistent): each rank started its
    2 loader processes once (a new split loader each time would start 10)."""
    (x, y), (x_val, y_val) = launch["inputs"]["train"], launch["inputs"]["val"]
    _, after = _sgd_by_hand(launch["inputs"]["initial"], [[(x, y)] * 3], 3)  # each rank trains on the whole batch
    for index, rank in enumerate(launch["ranks"]):
        assert len((launch["out"] / f"workers{index}.txt").read_text().split()) == 2
        for summary, weights in zip(rank["workers"]["epochs"], after, strict=True):
            assert {k: summary[f"val_{k}"] for k in ("loss", "accuracy")} == pytest.approx(
                _values(weights, x_val, y_val), rel=1e-5
            )
        for tested in rank["workers"]["tests"]:
            assert tested == pytest.approx(_values(after[-1], x_val, y_val), rel=1e-5)


# -- the experiment folder ----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_rank_takes_the_main_ranks_experiment_folder_and_resume(launch: dict[str, Any]) -> None:
    """A run stopped by an error is run again in the same script: the main process sees its own in-progress mark
    (an unfinished run to continue), the others a mark of a live process (a folder taken). Every rank must
    continue `retry.exp`, with the sibling step checkpoint there, and end with the uninterrupted run's weights;
    after it finished, a new run of that name goes to `retry-2.exp` on every rank."""
    for rank in launch["ranks"]:
        record = rank["experiment"]
        assert record["error"] == "stopped on purpose when epoch 2 started"
        assert record["configs"] == ("retry.exp", True)
        assert record["retry"] == ("experiments/retry.exp", True, "experiments/retry.exp/checkpoints/last.model")
        assert record["again"] == ("experiments/retry-2.exp", False)
        # bit for bit on 2 processes; on 3, gloo sums a fresh DDP's first buckets in another order (last bits differ)
        _assert_weights(record["resumed"], record["reference"])
    files = {
        p.relative_to(launch["out"] / "experiments").parts[0]
        for p in (launch["out"] / "experiments").rglob("*")
        if p.is_file()
    }
    assert files == {"retry.exp"}  # no rank wrote anywhere else


# -- a parameter without a gradient -------------------------------------------------------------------


@pytest.mark.slow
def test_a_parameter_without_gradient_names_the_strategy_option_and_trains_with_it(launch: dict[str, Any]) -> None:
    for rank in launch["ranks"]:
        for accumulate, message in rank["unused"]["errors"].items():
            assert "strategy=torchmanager_core.strategy.DDP(find_unused_parameters=True)" in message, accumulate
            assert message.endswith("Received: parameters without a gradient: ['spare.weight', 'spare.bias']")
            assert "shape" not in message
    initial = launch["inputs"]["initial"]  # TwoHeads' head is made as make_model's Linear
    seen = [rank["unused"]["seen"] for rank in launch["ranks"]]
    _, after = _sgd_by_hand(initial, seen, 2)
    spare = script.TwoHeads().spare.state_dict()
    for rank in launch["ranks"]:
        weights = rank["unused"]["weights"]
        _assert_weights({k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}, after[-1])
        _assert_weights({k.removeprefix("spare."): v for k, v in weights.items() if k.startswith("spare.")}, spare)


# -- in this process, as each rank would ----------------------------------------------------------------


def _as_rank(rank: int, world: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "get_world_size", lambda: world)
    monkeypatch.setattr(distributed, "get_rank", lambda: rank)


PAIRS = TensorDataset(torch.arange(12.0), torch.arange(12))


def test_a_distributed_sampler_made_for_another_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_rank(0, 2, monkeypatch)
    loader = DataLoader(PAIRS, batch_size=2, sampler=DistributedSampler(PAIRS, num_replicas=4, rank=0))
    with pytest.raises(ValueError, match=r"made for another process group.*Received: sampler num_replicas=4, rank=0"):
        training_shards.shard(loader)
    own = DataLoader(PAIRS, batch_size=2, sampler=DistributedSampler(PAIRS, num_replicas=2, rank=0))
    assert training_shards.shard(own) is own


def test_an_iterable_dataset_that_does_not_say_it_shards_itself_is_refused_saying_how(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Plain(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(range(4))

    _as_rank(1, 2, monkeypatch)
    for split in (training_shards.shard, evaluation_shards.split):
        with pytest.raises(TypeError, match=r"get_worker_info\(\).*`shards_itself = True`. Received: dataset=Plain"):
            split(DataLoader(Plain()))
    stream = script.Stream(*script.make_data(8, 0))
    assert isinstance(training_shards.shard(DataLoader(stream)), training_shards.StreamShare)
    share = evaluation_shards.split(DataLoader(stream))
    assert isinstance(share, evaluation_shards.Share) and not share.dealt


def test_a_split_loader_is_made_once_per_loader_and_number_of_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = DataLoader(PAIRS, batch_size=2, num_workers=1)
    _as_rank(1, 2, monkeypatch)
    first, second = evaluation_shards.split(loader), evaluation_shards.split(loader)
    assert isinstance(first, evaluation_shards.Share) and isinstance(second, evaluation_shards.Share)
    assert first.batches is second.batches and first.batches.persistent_workers  # type: ignore[attr-defined]
    _as_rank(1, 3, monkeypatch)
    third = evaluation_shards.split(loader)
    assert third.batches is not first.batches  # type: ignore[attr-defined]
    assert [x.tolist() for x, _ in third] == [[2.0, 3.0], [8.0, 9.0]]  # batches 1 and 4 of 6 dealt to rank 1 of 3


def test_a_split_loader_keeping_its_processes_takes_a_new_iterators_base_seed_each_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether the split loader's processes are new or kept, each pass takes from the loader's generator what a
    new iterator of the user's loader takes, so the generator is where one process would leave it."""
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(PAIRS, batch_size=2, shuffle=True, num_workers=1, generator=generator)
    reference = torch.Generator().manual_seed(5)
    reference_loader = DataLoader(PAIRS, batch_size=2, shuffle=True, num_workers=0, generator=reference)
    _as_rank(0, 2, monkeypatch)
    monkeypatch.setattr(distributed, "agree_on", lambda value: value)
    share = evaluation_shards.split(loader)
    for _ in range(3):
        list(share)
        list(reference_loader)
        assert torch.equal(generator.get_state(), reference.get_state())


def test_host_collectives_carry_values_of_each_ranks_own_size(launch: dict[str, Any]) -> None:
    """Objects gathered and broadcast through tensors of torchmanager's own (a size per rank), written out by hand."""
    world = launch["world"]

    def own(rank: int) -> dict[str, Any]:
        return {"rank": rank, "text": "x" * (1000 * rank + 1), "tensor": torch.arange(rank + 2.0)}

    for record in launch["ranks"]:
        values = record["collectives"]
        gathered = values["gathered"]
        assert [part["rank"] for part in gathered] == list(range(world))
        assert [len(part["text"]) for part in gathered] == [1000 * r + 1 for r in range(world)]
        for r, part in enumerate(gathered):
            assert torch.equal(part["tensor"], own(r)["tensor"])
        assert values["from_main"]["rank"] == 0 and values["from_main"]["text"] == "x"
        assert values["on_main_error"] == ("ValueError", "disk full")  # rank 0's failure, on every rank
        assert values["agreed_alike"] == ["same", 1]
        assert values["agreed_apart"]["rank"] == 0  # the ranks differ: rank 0's value
        assert values["flags"] == [r == world - 1 for r in range(world)]
        assert values["max"] == [world - 1, 0]
        assert values["started_max"] == [10 * (world - 1)]
        assert torch.equal(values["buffers"][0], torch.zeros(3)) and values["buffers"][1].tolist() == [0]


def test_the_exit_waits_until_the_backend_let_go_of_every_tensor(launch: dict[str, Any]) -> None:
    """Every tensor handed to a collective is followed until gloo's worker thread let go of it: after the wait
    none is held (that thread releases it by taking the GIL, which aborts the process once Python finalizes)."""
    for record in launch["ranks"]:
        values = record["collectives"]
        assert values["handed"] > 0  # the last collectives' tensors (those let go are dropped at each hand-over)
        assert values["still_held_at_exit"] == 0
        assert values["users_after_wait"] == [0] * values["handed"]  # read on the tensors themselves
