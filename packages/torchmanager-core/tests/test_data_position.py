"""Resuming a pass at a global sample position without loading what came before (`data_position`).

The reference is always the same loader built the same way and iterated in full: the resumed pass
must yield exactly (`torch.equal`) the full pass's batches after the position, leave every generator
(the loader's and torch's global one) where the full pass leaves it, so that the next epoch is the
same, and load no item before the position. Under a `DistributedSampler` the reference order is
`torch.randperm` seeded as the sampler documents (seed + epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler

from torchmanager_core.data_position import resume_iterator, samples_done, set_epoch

N = 23


class Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Row i is (i, a value computed from i); records the indices it loaded (in this process)."""

    def __init__(self) -> None:
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.loaded.append(index)
        return torch.tensor(index), torch.tensor([index * 0.5, index**2 / 7.0])


MakeLoader = Callable[[], DataLoader[Any]]


def loaders(workers: int) -> dict[str, MakeLoader]:
    """Loaders of every kind of index order, each built afresh by its function."""

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(5)

    return {
        "sequential": lambda: DataLoader(Rows(), batch_size=4, num_workers=workers),
        "shuffle-generator": lambda: DataLoader(
            Rows(), batch_size=4, shuffle=True, generator=generator(), num_workers=workers
        ),
        "shuffle-global": lambda: DataLoader(Rows(), batch_size=4, shuffle=True, num_workers=workers),
        "drop-last": lambda: DataLoader(Rows(), batch_size=5, shuffle=True, drop_last=True, num_workers=workers),
        "batch-sampler": lambda: DataLoader(
            Rows(),
            batch_sampler=BatchSampler(RandomSampler(range(N), generator=generator()), 3, drop_last=False),
            num_workers=workers,
        ),
        "no-batching": lambda: DataLoader(Rows(), batch_size=None, shuffle=True, num_workers=workers),
    }


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)


def run(make: MakeLoader, resume_at: int | None) -> tuple[list[Any], list[Any], list[torch.Tensor], list[int]]:
    """(this epoch's batches from `resume_at` on, the next epoch's, the generators' states after, items loaded)."""
    torch.manual_seed(123)
    loader = make()
    if resume_at is None:
        batches = list(loader)
    else:
        position = samples_done(loader, resume_at)
        assert position is not None
        resumed = resume_iterator(loader, position)
        assert resumed is not None
        batches = list(resumed)
    loaded = list(loader.dataset.loaded)  # type: ignore[attr-defined]
    states = [torch.get_rng_state()] + ([loader.generator.get_state()] if loader.generator is not None else [])
    return batches, list(loader), states, loaded


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", list(loaders(0)))
def test_a_resumed_pass_is_the_tail_of_a_full_pass_and_the_next_epoch_is_the_same(kind: str, workers: int) -> None:
    make = loaders(workers)[kind]
    full, next_epoch, states, _ = run(make, None)
    for resume_at in (0, 1, len(full) // 2, len(full) - 1):
        batches, resumed_next_epoch, resumed_states, loaded = run(make, resume_at)
        assert len(batches) == len(full) - resume_at
        for a, b in zip(batches, full[resume_at:]):
            assert_same(a, b)
        assert_same(resumed_next_epoch, next_epoch)  # the generators moved on as in the full pass
        for a, b in zip(resumed_states, states):
            assert torch.equal(a, b)
        if workers == 0:  # items load in this process: only those after the position were loaded
            expected = [int(i) for batch in full[resume_at:] for i in batch[0].reshape(-1)]
            assert loaded[: len(expected)] == expected


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["shuffle-generator", "shuffle-global", "batch-sampler"])
def test_generators_put_back_after_the_first_resumed_batch_end_the_epoch_where_a_full_pass_does(
    kind: str, workers: int
) -> None:
    """The loop's protocol: restore the epoch's start, resume, and once the first batch is drawn put every
    generator back as the checkpoint saw it; a sampler's draws at the end of its order must come after."""
    make = loaders(workers)[kind]
    torch.manual_seed(123)
    loader = make()
    generator = loader.generator or loader.batch_sampler.sampler.generator  # type: ignore[union-attr]
    start = [torch.get_rng_state()] + ([generator.get_state()] if generator is not None else [])
    iterator = iter(loader)
    full = [next(iterator) for _ in range(3)]  # a checkpoint after batch 2, the loop having looked ahead
    saved = [torch.get_rng_state()] + ([generator.get_state()] if generator is not None else [])
    full += list(iterator)
    end = [torch.get_rng_state()] + ([generator.get_state()] if generator is not None else [])

    def put(states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        if generator is not None:
            generator.set_state(states[1])

    put(start)
    position = samples_done(loader, 2)
    assert position is not None
    resumed = resume_iterator(loader, position)
    assert resumed is not None
    batches = [next(resumed)]
    put(saved)
    batches += list(resumed)
    for a, b in zip(batches, full[2:], strict=True):
        assert_same(a, b)
    for a, b in zip([torch.get_rng_state()] + ([generator.get_state()] if generator is not None else []), end):
        assert torch.equal(a, b)


def test_the_position_counts_samples_of_every_process() -> None:
    loader = DataLoader(Rows(), batch_size=4)
    assert samples_done(loader, 3) == 12
    sharded = DataLoader(Rows(), batch_size=4, sampler=DistributedSampler(Rows(), num_replicas=3, rank=1))
    assert samples_done(sharded, 2) == 24  # 2 batches of 4 on each of 3 processes
    assert samples_done(DataLoader(Rows(), batch_size=None), 5) == 5


def distributed(world: int, rank: int, *, drop_last: bool = False, epoch: int = 0) -> DataLoader[Any]:
    sampler: DistributedSampler[Any] = DistributedSampler(
        Rows(), num_replicas=world, rank=rank, shuffle=True, seed=3, drop_last=drop_last
    )
    loader = DataLoader(Rows(), batch_size=2, sampler=sampler)
    set_epoch(loader, epoch)
    return loader


def ids(batches: list[Any]) -> list[int]:
    return [int(i) for batch in batches for i in batch[0]]


@pytest.mark.parametrize("drop_last", [False, True])
def test_each_process_continues_its_own_share_on_as_many_processes(drop_last: bool) -> None:
    for rank in range(2):
        full = list(distributed(2, rank, drop_last=drop_last, epoch=1))
        for resume_at in (1, 3):
            position = samples_done(distributed(2, rank, drop_last=drop_last, epoch=1), resume_at)
            assert position == resume_at * 2 * 2
            resumed = resume_iterator(distributed(2, rank, drop_last=drop_last, epoch=1), position)
            assert resumed is not None
            rest = list(resumed)
            assert len(rest) == len(full) - resume_at
            for a, b in zip(rest, full[resume_at:]):
                assert_same(a, b)


@pytest.mark.parametrize("world", [1, 3])
def test_a_position_saved_by_two_processes_resumes_on_another_number(world: int) -> None:
    order = torch.randperm(N, generator=torch.Generator().manual_seed(3 + 1)).tolist()  # DistributedSampler's
    done_by_two = [ids(list(distributed(2, rank, epoch=1))[:3]) for rank in range(2)]
    position = samples_done(distributed(2, 0, epoch=1), 3)
    assert position == 12 and sorted(done_by_two[0] + done_by_two[1]) == sorted(order[:12])

    shares = []
    for rank in range(world):
        resumed = resume_iterator(distributed(world, rank, epoch=1), position)
        assert resumed is not None
        shares.append(ids(list(resumed)))
    assert len({len(share) for share in shares}) == 1  # every process steps as often
    remaining = [i for share in shares for i in share]
    padding = len(remaining) - (N - 12)  # as DistributedSampler pads: with the first samples of the order
    assert 0 <= padding < world and sorted(remaining) == sorted(order[12:] + order[:padding])


def test_sources_without_indices_are_replayed() -> None:
    class Stream(IterableDataset[int]):
        def __iter__(self) -> Any:
            return iter(range(10))

    class OwnBatches:
        def __iter__(self) -> Any:
            return iter([[0, 1], [2, 3]])

        def __len__(self) -> int:
            return 2

    assert resume_iterator(DataLoader(Stream(), batch_size=2), 4) is None
    assert samples_done(DataLoader(Stream(), batch_size=2), 2) is None
    assert resume_iterator([torch.zeros(2)] * 3, 1) is None
    assert resume_iterator(DataLoader(Rows(), batch_sampler=OwnBatches()), 2) is None


def test_bad_positions_are_refused() -> None:
    loader = DataLoader(Rows(), batch_size=4)
    with pytest.raises(ValueError, match=r"`samples_done` must be an int >= 0. Received: samples_done=-1"):
        resume_iterator(loader, -1)
    with pytest.raises(ValueError, match=r"`batches_done` must be an int >= 0. Received: batches_done=1.5"):
        samples_done(loader, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"past the end of the epoch's order of 23 samples.*Received: samples_done=24"):
        resume_iterator(loader, 24)


def test_set_epoch_tells_the_sampler_and_the_data_set() -> None:
    class Told(Rows):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    sampler: DistributedSampler[Any] = DistributedSampler(Rows(), num_replicas=2, rank=0)
    loader = DataLoader(Told(), batch_sampler=BatchSampler(sampler, 2, drop_last=False))
    set_epoch(loader, 4)
    assert sampler.epoch == 4 and loader.dataset.epoch == 4  # type: ignore[attr-defined]
