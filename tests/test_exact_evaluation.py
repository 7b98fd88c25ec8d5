"""Validation, `test` and `predict` under torchrun count each sample once, for any number of processes.

Two launches of `tests/scripts/ddp_exact.py` (2 and 3 gloo processes on the CPU) evaluate data
sets whose sizes do not divide by the number of processes (the issue's 5 samples in batches of 2,
and shares that are empty) from every kind of source; every rank's values must equal one
process's, computed here by hand (torch.nn.functional, scikit-learn), and `predict` must return
what a single-process `predict` returns. The other tests split data as each rank would, with the
rank and world size patched in (as torchrun sets them), and compare with one process's batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    TensorDataset,
    WeightedRandomSampler,
)

from tests.scripts import ddp_exact
from tests.test_torchrun import SCRIPTS, torchrun
from torchmanager_core import distributed, evaluation_shards, training_shards


@pytest.fixture(scope="module", params=[2, 3], ids=["2 processes", "3 processes"])
def launch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One launch of ddp_exact.py: its inputs and each rank's results."""
    world = request.param
    out = tmp_path_factory.mktemp(f"exact{world}")
    done = torchrun(SCRIPTS / "ddp_exact.py", str(out), cwd=out, processes=world)
    assert done.returncode == 0, done.stderr
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
    return {"world": world, "ranks": ranks, "inputs": torch.load(out / "inputs.pt", weights_only=False)}


def _model(weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    model = ddp_exact.make_model()
    model.load_state_dict(weights)
    return model


def _by_hand(kind: str, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One process's values of the whole data set: torch.nn.functional, and scikit-learn's F1."""
    out = F.linear(x, weights["weight"], weights["bias"])
    predicted = out.argmax(1)
    values = {"loss": F.cross_entropy(out, y).item(), "accuracy": (predicted == y).double().mean().item()}
    if kind == "stateful":
        values["f1"] = float(f1_score(y.numpy(), predicted.numpy(), average="macro", zero_division=0))
        values["confidence"] = out.softmax(1).amax(1).mean().item()
    else:
        top2 = out.topk(2, dim=1).values
        values["margin"] = (top2[:, 0] - top2[:, 1]).mean().item()
    return values


@pytest.mark.slow
def test_every_rank_reports_the_whole_data_sets_values(launch: dict[str, Any]) -> None:
    """The issue's input (5 samples in batches of 2) among others: each sample counted once, on every rank (a
    `DistributedSampler` would count sample 0 twice, padding 5 to 6)."""
    weights = launch["inputs"]["weights"]
    for kind, n, batch, source in launch["ranks"][0]["test"]:
        expected = _by_hand(kind, weights, *launch["inputs"]["eval"][n, batch])
        for rank in launch["ranks"]:
            assert rank["test"][kind, n, batch, source] == pytest.approx(expected, rel=1e-5), (kind, n, batch, source)
    assert len(launch["ranks"][0]["test"]) == len(ddp_exact.MANAGERS) * len(ddp_exact.SIZES) * len(ddp_exact.SOURCES)


def _ignoring_by_hand(weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The class-weighted cross entropy and the focal loss (gamma 2) of the whole data set, ignored labels left out."""
    out = F.linear(x, weights["weight"], weights["bias"]).double()
    ce = F.cross_entropy(out, y, weight=ddp_exact.CLASS_WEIGHTS.double(), ignore_index=ddp_exact.IGNORED).item()
    kept = y != ddp_exact.IGNORED
    log_p = out[kept].log_softmax(1).gather(1, y[kept, None]).squeeze(1)
    focal = (-((1 - log_p.exp()) ** 2) * log_p).mean().item()
    return {"loss": ce + focal, "ce_loss": ce, "focal_loss": focal}


@pytest.mark.slow
def test_losses_that_ignore_labels_are_exact_on_every_rank(launch: dict[str, Any]) -> None:
    """Each batch's cross entropy divides by its kept labels' class weights: the epoch value divides the sums by
    their total over all ranks, as one call on the whole data set does (not a mean of batch means)."""
    weights = launch["inputs"]["weights"]
    cases = launch["ranks"][0]["ignoring"]
    assert len(cases) == len(ddp_exact.IGNORING) * len(ddp_exact.SIZES) * 2
    for kind, n, batch, source in cases:
        x, y = launch["inputs"]["eval"][n, batch]
        expected = _ignoring_by_hand(weights, x, ddp_exact.with_ignored(y))
        if kind == "multi":
            expected = {"loss": expected["loss"]}
        for rank in launch["ranks"]:
            assert rank["ignoring"][kind, n, batch, source] == pytest.approx(expected, rel=1e-5), (kind, n, batch)


@pytest.mark.slow
def test_predict_returns_one_process_outputs_in_the_data_sets_order(launch: dict[str, Any]) -> None:
    model = _model(launch["inputs"]["weights"])
    for (kind, n, batch, source), outputs in launch["ranks"][0]["predict"].items():
        x, y = launch["inputs"]["eval"][n, batch]
        for rank in launch["ranks"][1:]:
            assert len(rank["predict"][kind, n, batch, source]) == len(outputs)
            assert all(map(torch.equal, rank["predict"][kind, n, batch, source], outputs)), (kind, n, batch, source)
        if source == "loader_unseeded":  # the order rank 0 drew: the same rows, each once
            together, by_hand = torch.cat(outputs), model(x).detach()
            torch.testing.assert_close(together[together[:, 0].argsort()], by_hand[by_hand[:, 0].argsort()])
            continue
        single = ddp_exact.new_manager(kind, model).predict(
            ddp_exact.make_source("loader" if source == "user_sampler" else source, x, y, batch)
        )
        assert len(outputs) == len(single) and all(map(torch.equal, outputs, single)), (kind, n, batch, source)


@pytest.mark.slow
def test_validation_is_exact_after_every_epoch(launch: dict[str, Any]) -> None:
    for (source, n, batch), epochs in launch["ranks"][0]["validation"].items():
        assert len(epochs) == ddp_exact.EPOCHS
        for epoch, end in enumerate(epochs):
            expected = _by_hand("stateful", end["weights"], *launch["inputs"]["eval"][n, batch])
            for rank in launch["ranks"]:
                ours = rank["validation"][source, n, batch][epoch]
                assert ours["val"] == pytest.approx(expected, rel=1e-5), (source, n, batch, epoch)
                assert all(torch.equal(ours["weights"][k], v) for k, v in end["weights"].items())


@pytest.mark.slow
def test_an_empty_data_set_fails_on_every_rank(launch: dict[str, Any]) -> None:
    for rank in launch["ranks"]:
        assert rank["empty"]["test"].startswith(
            "The data set to test on yielded no batches; give a non-empty data set."
        )
        assert rank["empty"]["predict"].startswith("The data set to predict on yielded no batches;")


@pytest.mark.slow
def test_training_on_an_uneven_list_deals_the_first_batches_again(launch: dict[str, Any]) -> None:
    """5 batches of one sample: each rank steps ceil(5 / world) times (DDP needs as many steps), and the weights
    follow plain SGD on the mean of each step's batches, by hand."""
    world, (x, y) = launch["world"], launch["inputs"]["train"]
    x, y = x[:5], y[:5]
    steps = -(-5 // world)
    for rank, result in enumerate(launch["ranks"]):
        assert [int((seen == x).all(1).nonzero()) for seen in result["uneven_list"]["seen"]] == [
            (rank + step * world) % 5 for step in range(steps)
        ]
    params = {k: v.clone().requires_grad_() for k, v in launch["inputs"]["weights"].items()}
    for step in range(steps):
        ids = [(rank + step * world) % 5 for rank in range(world)]
        loss = F.cross_entropy(F.linear(x[ids], params["weight"], params["bias"]), y[ids])
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for param, grad in zip(params.values(), grads, strict=True):
                param -= ddp_exact.LR * grad
    for result in launch["ranks"]:
        for name, param in params.items():
            torch.testing.assert_close(result["uneven_list"]["weights"][name], param.detach())


# -- splitting as each rank would (rank and world size patched in) ------------------------------------


def _as_each_rank(world: int, make: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The batches `evaluation_shards.split` gives each rank of `world`, each from a fresh source (as each process has)."""
    monkeypatch.setattr(distributed, "get_world_size", lambda: world)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        share = evaluation_shards.split(make())
        batches = list(share)
        assert len(share) == len(batches)  # type: ignore[arg-type]
        shares.append(batches)
    return shares


def _same_batches(ours: list[Any], expected: list[Any]) -> bool:
    return len(ours) == len(expected) and all(
        all(map(torch.equal, a, b)) if isinstance(a, (tuple, list)) else torch.equal(a, b)
        for a, b in zip(ours, expected, strict=True)
    )


X, Y = ddp_exact.eval_data(11, 3)
PAIRS = TensorDataset(X, Y)
SOURCES: dict[str, Callable[[], Any]] = {
    "dataset": lambda: ddp_exact.TensorSet(X, Y, 3),
    "dataset shuffled": lambda: ddp_exact.TensorSet(X, Y, 3, shuffle=True, generator=torch.Generator().manual_seed(1)),
    "dataset drop_last": lambda: ddp_exact.TensorSet(X, Y, 2, drop_last=True),
    "loader": lambda: DataLoader(PAIRS, batch_size=3),
    "loader shuffled": lambda: DataLoader(
        PAIRS, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2)
    ),
    "loader drop_last": lambda: DataLoader(PAIRS, batch_size=4, drop_last=True),
    "loader without batching": lambda: DataLoader(PAIRS, batch_size=None),
    "loader with a batch sampler": lambda: DataLoader(PAIRS, batch_sampler=[[3, 1], [0], [2, 4, 5], [10, 9, 8, 7, 6]]),
    "loader with a weighted sampler": lambda: DataLoader(
        PAIRS, batch_size=2, sampler=WeightedRandomSampler([1.0] * 11, 7, generator=torch.Generator().manual_seed(3))
    ),
    "list": lambda: [(X[i : i + 3], Y[i : i + 3]) for i in range(0, 11, 3)],
    "tuple": lambda: tuple((X[i : i + 2], Y[i : i + 2]) for i in range(0, 11, 2)),
}


@pytest.mark.parametrize("world", [2, 3, 4, 8])
@pytest.mark.parametrize("source", SOURCES)
def test_the_ranks_batches_dealt_back_are_one_process_batches(
    source: str, world: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch one process makes, once, whole: batch i on rank i mod world (shares differ by a batch at most)."""
    single = list(SOURCES[source]())
    shares = _as_each_rank(world, SOURCES[source], monkeypatch)
    assert _same_batches(evaluation_shards.interleave(shares), single)
    assert [len(share) for share in shares] == [len(range(rank, len(single), world)) for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3, 8])
def test_a_distributed_sampler_or_a_training_share_stands_for_the_whole_data_set(
    world: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DDP user's `DistributedSampler`, a Dataset that `fit` sharded and a list `fit` dealt out are evaluated whole."""
    single = list(DataLoader(PAIRS, batch_size=3))

    def users_loader() -> DataLoader[Any]:
        sampler = DistributedSampler(PAIRS, num_replicas=world, rank=distributed.get_rank(), shuffle=False)
        return DataLoader(PAIRS, batch_size=3, sampler=sampler)

    def sharded_for_training() -> Any:
        return training_shards.shard(ddp_exact.TensorSet(X, Y, 3))

    def dealt_for_training() -> Any:
        return training_shards.shard([(X[i : i + 3], Y[i : i + 3]) for i in range(0, 11, 3)])

    for make in (users_loader, sharded_for_training, dealt_for_training):
        assert _same_batches(evaluation_shards.interleave(_as_each_rank(world, make, monkeypatch)), single)

    def shuffled() -> DataLoader[Any]:
        sampler = DistributedSampler(PAIRS, num_replicas=world, rank=distributed.get_rank(), shuffle=True, seed=4)
        sampler.set_epoch(3)
        return DataLoader(PAIRS, batch_size=3, sampler=sampler)

    dealt = evaluation_shards.interleave(_as_each_rank(world, shuffled, monkeypatch))
    order = torch.randperm(11, generator=torch.Generator().manual_seed(4 + 3))  # DistributedSampler's documented draw
    assert _same_batches(dealt, list(DataLoader(torch.utils.data.Subset(PAIRS, order.tolist()), batch_size=3)))


def test_training_shares_of_a_list_are_padded_with_its_first_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [f"batch {i}" for i in range(5)]
    for world, expected in (
        (2, [["batch 0", "batch 2", "batch 4"], ["batch 1", "batch 3", "batch 0"]]),
        (3, [["batch 0", "batch 3"], ["batch 1", "batch 4"], ["batch 2", "batch 0"]]),
        (5, [[f"batch {i}"] for i in range(5)]),
        (8, [[f"batch {i % 5}"] for i in range(8)]),
    ):
        monkeypatch.setattr(distributed, "get_world_size", lambda world=world: world)
        shares = []
        for rank in range(world):
            monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
            shares.append(training_shards.shard(batches))
        assert shares == expected
        assert all(share.whole is batches for share in shares)  # type: ignore[attr-defined]


class _Stream(IterableDataset):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter([(torch.tensor(float(i)), i) for i in range(8)])


def test_what_cannot_be_split_is_refused_in_the_house_format(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match=r"an IterableDataset cannot be split by index.*Received: dataset=_Stream"):
        _as_each_rank(2, lambda: DataLoader(_Stream(), batch_size=4), monkeypatch)
    with pytest.raises(TypeError, match=r"this iterable cannot be split.*Received: dataset=generator"):
        _as_each_rank(2, lambda: ((X[i : i + 2], Y[i : i + 2]) for i in range(0, 11, 2)), monkeypatch)

    class OwnShare(torch.utils.data.Sampler[int]):  # a distributed sampler of the user's, its whole order unknown
        def __init__(self) -> None:
            self.num_replicas, self.rank = 2, distributed.get_rank()

        def __iter__(self) -> Any:
            return iter(range(self.rank, 11, 2))

    with pytest.raises(TypeError, match=r"draws one process's share.*Received: sampler=OwnShare"):
        _as_each_rank(2, lambda: DataLoader(PAIRS, batch_size=2, sampler=OwnShare()), monkeypatch)


def test_a_single_process_evaluates_its_data_as_it_is() -> None:
    for make in SOURCES.values():
        source = make()
        assert evaluation_shards.split(source) is source
    batches = [(X[:2], Y[:2])]
    assert evaluation_shards.gather(batches, batches) is batches


# -- a rank without a batch takes part in the reductions ----------------------------------------------


class _PerClass(torch.nn.Module):
    """A metric function whose value is a vector: its mean state takes that shape at the first batch."""

    def forward(self, y: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return y.softmax(1).mean(0)


def _pass(manager: Any, batches: list[Any]) -> Any:
    """The manager's evaluation values after a pass over `batches` (in one process, no reading)."""
    values = manager._evaluation
    values.reset()
    values.believe_steps = isinstance(manager, ddp_exact.CustomStep)
    with torch.no_grad():
        for x, y in batches:
            values.record(manager.test_step(x, y), x, y)
    return values


def _flat(state: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(state, Mapping):
        return {k: v for key, item in state.items() for k, v in _flat(item, (*path, key)).items()}
    if isinstance(state, list) and "pending" in path:  # a tracker's `[mean, n]` pairs waiting to be summed
        return {k: v for index, item in enumerate(state) for k, v in _flat(item, (*path, index)).items()}
    return {path: state}


@pytest.mark.parametrize("kind", ddp_exact.MANAGERS)
def test_a_rank_without_batches_holds_the_layout_of_the_values_with_nothing_counted(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 of 2 had no batch: after `join` its values have rank 0's layout (every name, shape and dtype), so the
    reductions match, and summing both ranks' states gives rank 0's: zeros where it counts, reset states elsewhere."""
    x, y = ddp_exact.eval_data(5, 2)
    source = ddp_exact.new_manager(kind, ddp_exact.make_model(), per_class=_PerClass())
    state = _pass(source, [(x[:2], y[:2]), (x[2:], y[2:])]).state_dict()
    values = _pass(ddp_exact.new_manager(kind, ddp_exact.make_model(), per_class=_PerClass()), [])
    monkeypatch.setattr(distributed, "all_flags", lambda flag: [True, flag])
    monkeypatch.setattr(distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed, "gather_objects", lambda value: [evaluation_shards._spec(state), value])
    assert evaluation_shards.join(values, False, torch.device("cpu"))

    blank = _flat(values.state_dict())
    ours = _flat(state)
    assert blank.keys() == ours.keys()
    for path, theirs in ours.items():
        if isinstance(theirs, torch.Tensor):
            assert (blank[path].shape, blank[path].dtype) == (theirs.shape, theirs.dtype), path
            assert torch.equal(blank[path] + theirs, theirs), path  # the sum leaves rank 0's state as it is
        elif isinstance(theirs, bool):
            assert blank[path] is theirs, path  # a flag (whether the losses made the values), not a count
        elif isinstance(theirs, list):
            assert blank[path] == [], path  # a metric's batches waiting to be summed, a "cat" state: none here
        elif path[-1] == "calls":
            assert blank[path] == theirs > 0  # the losses' and metrics' values mean something
        else:
            assert blank[path] == 0, path  # a count
    assert any(torch.is_tensor(v) and v.dim() == 1 for p, v in ours.items() if "per_class" in p)
