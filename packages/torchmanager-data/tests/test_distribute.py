"""`distribute`: shards an instance, a class or a builder; together the ranks cover the data."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

from torchmanager_data import Dataset, distribute


class Items(Dataset[Any]):
    def __init__(self, n: int, batch_size: int = 2, **kwargs: Any) -> None:
        super().__init__(batch_size, num_workers=0, **kwargs)
        self.n = n

    @property
    def unbatched_len(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        return torch.tensor(index)


@distribute(world_size=3, rank=2)
class ShardedItems(Items):
    """Items, rank 2 of 3."""


def seen(dataset: Dataset[Any]) -> list[int]:
    return [int(i) for x, _ in dataset for i in x]


def test_instances_of_every_rank_cover_the_data_once() -> None:
    shards = [seen(distribute(Items(12, shuffle=True), world_size=3, rank=r, seed=5)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(item for shard in shards for item in shard) == list(range(12))
    assert shards[0] != sorted(shards[0]) or shards[1] != sorted(shards[1])  # the sampler shuffles


def test_distribute_a_class() -> None:
    dataset = ShardedItems(9)
    assert isinstance(dataset, Items)
    assert isinstance(dataset.sampler, DistributedSampler) and dataset.sampler.rank == 2
    assert seen(dataset) == [2, 5, 8]
    assert ShardedItems.__name__ == "ShardedItems" and ShardedItems.__doc__ == "Items, rank 2 of 3."
    restored = pickle.loads(pickle.dumps(dataset))
    assert seen(restored) == [2, 5, 8]


def test_distribute_a_builder_function() -> None:
    def load(n: int) -> Items:
        """Builds Items."""
        return Items(n)

    sharded = distribute(load, world_size=2, rank=1)
    assert sharded.__doc__ == "Builds Items."
    assert seen(sharded(6)) == [1, 3, 5]
    assert seen(distribute(world_size=2, rank=0)(load)(6)) == [0, 2, 4]


def test_set_epoch_reshuffles_every_rank_alike() -> None:
    ranks = [distribute(Items(10, shuffle=True), world_size=2, rank=r) for r in range(2)]
    for epoch in range(3):
        for dataset in ranks:
            dataset.set_epoch(epoch)
        assert sorted(seen(ranks[0]) + seen(ranks[1])) == list(range(10))


def test_drop_last_makes_the_shards_disjoint() -> None:
    shards = [seen(distribute(Items(7, batch_size=1, drop_last=True), world_size=2, rank=r)) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize(
    ("world_size", "rank", "error", "message"),
    [
        (0, 0, ValueError, r"`world_size` must be a positive int\. Received: world_size=0"),
        (2, 2, ValueError, r"`rank` must be an int in \[0, world_size\)\. Received: rank=2, world_size=2"),
        (2, -1, ValueError, r"Received: rank=-1, world_size=2"),
        (2.0, 0, TypeError, r"`world_size` must be an int\. Received: world_size=2\.0"),
        (2, True, TypeError, r"`rank` must be an int\. Received: rank=True"),
    ],
)
def test_bad_world(world_size: Any, rank: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        distribute(Items(4), world_size=world_size, rank=rank)


def test_only_torchmanager_datasets() -> None:
    with pytest.raises(TypeError, match=r"`distribute` shards a torchmanager `Dataset`\. Received: dataset=list"):
        distribute(lambda: [1, 2], world_size=1, rank=0)()
    with pytest.raises(TypeError, match=r"`distribute` shards a torchmanager `Dataset`\. Received: dataset=int"):
        distribute(int, world_size=1, rank=0)
    with pytest.raises(
        TypeError,
        match=r"`distribute` takes a Dataset, a Dataset class or a function returning one\. Received: dataset=3",
    ):
        distribute(3, world_size=1, rank=0)


def test_a_dataset_with_another_sampler_is_refused() -> None:
    with pytest.raises(ValueError, match=r"The dataset already has a sampler, which sharding would replace"):
        distribute(Items(4, sampler=[0, 1]), world_size=2, rank=0)
