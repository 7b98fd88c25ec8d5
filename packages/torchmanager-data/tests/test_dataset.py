"""`Dataset`: lengths, batching, the cached loader, shuffling, unpacking, samplers and bad input."""

from __future__ import annotations

import collections
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from torchmanager_data import Dataset


class Numbers(Dataset[Any]):
    """Item i is `(tensor([i.0]), i)`, or what `make(i)` returns."""

    def __init__(self, n: int, batch_size: int, make: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("num_workers", 0)
        super().__init__(batch_size, **kwargs)
        self.n = n
        self.make = make

    @property
    def unbatched_len(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if self.make is not None:
            return self.make(index)
        return torch.tensor([float(index)]), index


def labels_seen(dataset: Dataset[Any]) -> list[int]:
    return [int(i) for _, y in dataset for i in y]


@pytest.mark.parametrize(("drop_last", "batched_len", "sizes"), [(False, 4, [3, 3, 3, 1]), (True, 3, [3, 3, 3])])
def test_lengths_and_batches(drop_last: bool, batched_len: int, sizes: list[int]) -> None:
    dataset = Numbers(10, 3, drop_last=drop_last)
    assert len(dataset) == 10 and dataset.unbatched_len == 10
    assert dataset.batched_len == batched_len
    batches = list(dataset)
    assert [len(y) for _, y in batches] == sizes
    assert labels_seen(dataset) == list(range(sum(sizes)))
    x, y = batches[0]
    torch.testing.assert_close(x, torch.tensor([[0.0], [1.0], [2.0]]))
    torch.testing.assert_close(y, torch.tensor([0, 1, 2]))


def test_batch_size_that_divides_evenly() -> None:
    assert Numbers(9, 3).batched_len == Numbers(9, 3, drop_last=True).batched_len == 3


def test_the_loader_is_cached_and_rebuilt_when_an_option_changes() -> None:
    dataset = Numbers(10, 3)
    loader = dataset.loader
    assert isinstance(loader, DataLoader) and loader is dataset.loader
    list(dataset)
    assert dataset.loader is loader
    dataset.batch_size = 5
    assert dataset.loader is not loader and dataset.loader.batch_size == 5
    assert dataset.batched_len == 2


def test_shuffle_reproducible_with_a_generator_seed() -> None:
    def order(seed: int) -> list[list[int]]:
        dataset = Numbers(20, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [labels_seen(dataset) for _ in range(2)]

    first_epoch, second_epoch = order(0)
    assert order(0) == [first_epoch, second_epoch]
    assert sorted(first_epoch) == list(range(20)) and first_epoch != list(range(20))
    assert second_epoch != first_epoch  # reshuffled every epoch
    assert order(1)[0] != first_epoch


def test_shuffle_reproducible_with_the_global_seed() -> None:
    torch.manual_seed(123)
    first = labels_seen(Numbers(20, 4, shuffle=True))
    torch.manual_seed(123)
    assert labels_seen(Numbers(20, 4, shuffle=True)) == first
    assert sorted(first) == list(range(20))


def test_unpack_data_forms() -> None:
    x, y = torch.ones(2), torch.zeros(2)
    assert Dataset.unpack_data((x, y)) == (x, y)
    assert Dataset.unpack_data([x, y]) == (x, y)
    # a lone tensor or a dict is both input and target, as upstream (reconstruction, packed data)
    assert Dataset.unpack_data(x) == (x, x)
    packed = {"image": x, "mask": y}
    assert Dataset.unpack_data(packed) == (packed, packed)


def test_unpack_data_refuses_other_layouts() -> None:
    with pytest.raises(
        TypeError,
        match=r"A batch must be an \(input, target\) pair, a tensor or a dict; override `unpack_data` for other layouts\. Received: data=tuple of length 3",
    ):
        Dataset.unpack_data((1, 2, 3))
    with pytest.raises(TypeError, match=r"Received: data=int$"):
        Dataset.unpack_data(1)


def test_iterating_unpacks_tensors_and_dicts() -> None:
    tensors = list(Numbers(4, 2, make=lambda i: torch.tensor(float(i))))
    assert all(x is y for x, y in tensors)
    torch.testing.assert_close(tensors[1][0], torch.tensor([2.0, 3.0]))
    dicts = list(Numbers(4, 4, make=lambda i: {"a": torch.tensor(i), "b": torch.tensor(-i)}))
    ((x, y),) = dicts
    assert x is y
    torch.testing.assert_close(x["b"], torch.tensor([0, -1, -2, -3]))


def test_overriding_unpack_data() -> None:
    class Triples(Numbers):
        @staticmethod
        def unpack_data(data: Any) -> tuple[Any, Any]:
            a, b, c = data
            return (a, b), c

    ((inputs, target),) = list(Triples(2, 2, make=lambda i: (i, 2 * i, 3 * i)))
    torch.testing.assert_close(target, torch.tensor([0, 3]))
    torch.testing.assert_close(inputs[1], torch.tensor([0, 2]))


def test_pinned_memory_only_for_a_cuda_device() -> None:
    assert Numbers(4, 2).loader.pin_memory is False
    assert Numbers(4, 2, device="cuda").loader.pin_memory is torch.cuda.is_available()
    dataset = Numbers(4, 2)
    dataset.device = torch.device("cuda:0")
    assert dataset.device == torch.device("cuda:0")
    assert dataset.loader.pin_memory is torch.cuda.is_available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_for_cuda_are_pinned() -> None:
    for x, y in Numbers(4, 2, device="cuda"):
        assert x.is_pinned() and y.is_pinned()
        moved = x.to("cuda", non_blocking=True)
        torch.testing.assert_close(moved.cpu(), x)


def test_worker_processes_load_the_same_batches() -> None:
    assert labels_seen(Numbers(10, 3, num_workers=2)) == list(range(10))


def test_default_workers_are_bounded() -> None:
    assert 0 <= Numbers(4, 2, num_workers=None).num_workers <= 8


@pytest.mark.parametrize("bad", [0, -3])
def test_batch_size_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"`batch_size` must be a positive int\. Received: batch_size={bad}"):
        Numbers(4, bad)
    dataset = Numbers(4, 2)
    with pytest.raises(ValueError, match=rf"Received: batch_size={bad}"):
        dataset.batch_size = bad


def test_batch_size_must_be_an_int() -> None:
    with pytest.raises(TypeError, match=r"`batch_size` must be a positive int\. Received: batch_size=2\.0"):
        Numbers(4, 2.0)  # type: ignore[arg-type]


def test_an_empty_dataset_is_an_error_when_iterated() -> None:
    dataset = Numbers(0, 2)
    assert dataset.batched_len == 0
    with pytest.raises(
        ValueError,
        match=r"The dataset has no batch to iterate: it needs at least one item, and at least `batch_size` items when `drop_last=True`\. Received: unbatched_len=0, sampled_len=0, batch_size=2, drop_last=False",
    ):
        list(dataset)


def test_fewer_items_than_a_batch_with_drop_last_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Received: unbatched_len=3, sampled_len=3, batch_size=4, drop_last=True"):
        list(Numbers(3, 4, drop_last=True))


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"`num_workers` must be an int >= 0 or None\. Received: num_workers=-1"):
        Numbers(4, 2, num_workers=-1)
    with pytest.raises(
        ValueError, match=r"`device` must name a torch device such as 'cpu' or 'cuda:0'\. Received: device='gpu0'"
    ):
        Numbers(4, 2, device="gpu0")
    with pytest.raises(
        TypeError, match=r"`device` must be a torch\.device or a string such as 'cuda:0'\. Received: device=0"
    ):
        Numbers(4, 2, device=0)  # type: ignore[arg-type]


def test_a_sampler_decides_the_order_so_shuffle_must_be_off() -> None:
    dataset = Numbers(6, 2)
    with pytest.raises(
        ValueError,
        match=r"`shuffle` must be False when a `sampler` is given: the sampler decides the order .*Received: shuffle=True, sampler=list",
    ):
        Numbers(6, 2, sampler=[5, 4, 3], shuffle=True)
    dataset.sampler = [5, 4, 3]
    assert dataset.batched_len == 2
    assert labels_seen(dataset) == [5, 4, 3]


def test_distributed_sampler_ranks_cover_the_data_exactly_once() -> None:
    shards = {}
    for rank in (0, 1):
        dataset = Numbers(10, 2)
        dataset.sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=7)
        assert dataset.batched_len == 3  # 5 items each
        dataset.set_epoch(0)
        first = labels_seen(dataset)
        dataset.set_epoch(1)
        shards[rank] = (first, labels_seen(dataset))
    for epoch in (0, 1):
        together = shards[0][epoch] + shards[1][epoch]
        assert sorted(together) == list(range(10))
    assert shards[0][0] != shards[0][1]  # set_epoch reshuffles


def test_distributed_sampler_pads_or_drops_an_uneven_tail() -> None:
    padded = []
    dropped = []
    for rank in (0, 1):
        loose = Numbers(7, 2)
        loose.sampler = DistributedSampler(loose, num_replicas=2, rank=rank, shuffle=False)
        padded += labels_seen(loose)
        strict = Numbers(7, 2)
        strict.sampler = DistributedSampler(strict, num_replicas=2, rank=rank, shuffle=False, drop_last=True)
        dropped += labels_seen(strict)
    counts = collections.Counter(padded)
    assert set(counts) == set(range(7)) and sum(counts.values()) == 8  # one item repeated
    assert len(dropped) == 6 and len(set(dropped)) == 6


def test_shard_moves_shuffle_and_drop_last_into_a_distributed_sampler() -> None:
    seen = []
    for rank in (0, 1):
        dataset = Numbers(9, 2, shuffle=True, drop_last=False)
        sampler = dataset.shard(2, rank, seed=3)
        assert dataset.sampler is sampler and isinstance(sampler, DistributedSampler)
        assert (sampler.num_replicas, sampler.rank, sampler.shuffle, sampler.seed) == (2, rank, True, 3)
        assert dataset.shuffle is False
        assert len(dataset) == 9 and dataset.sampled_len == 5 and dataset.batched_len == 3
        seen += labels_seen(dataset)
    assert set(seen) == set(range(9)) and len(seen) == 10


def test_shard_keeps_a_matching_distributed_sampler_and_refuses_others() -> None:
    dataset = Numbers(8, 2)
    mine = DistributedSampler(dataset, num_replicas=4, rank=1, shuffle=False)
    dataset.sampler = mine
    assert dataset.shard(4, 1) is mine
    with pytest.raises(
        ValueError,
        match=r"The dataset's DistributedSampler was made for another process group\. Received: sampler num_replicas=4, rank=1; world_size=2, rank=0",
    ):
        dataset.shard(2, 0)
    other = Numbers(8, 2, sampler=SequentialSampler(range(8)))
    with pytest.raises(
        ValueError,
        match=r"The dataset already has a sampler, which sharding would replace; .*Received: sampler=SequentialSampler",
    ):
        other.shard(2, 0)


def test_set_epoch_without_a_distributed_sampler_does_nothing() -> None:
    dataset = Numbers(4, 2)
    dataset.set_epoch(3)
    assert labels_seen(dataset) == [0, 1, 2, 3]


def test_contains_compares_tensors_by_value() -> None:
    dataset = Numbers(3, 1)
    assert (torch.tensor([1.0]), 1) in dataset
    assert (torch.tensor([1.0]), 2) not in dataset
    assert (torch.tensor([1.0, 1.0]), 1) not in dataset
