"""Training data under torchrun: each process's share, and as many steps on every process.

Who owns what: DDP averages the gradients at every step, a collective every process must join, so
every process must step as often. This module gives each process its share of the training data
(`shard`): a `DistributedSampler` for a torchmanager `Dataset` or a `DataLoader` (padded as torch
pads it), batches dealt out for a list (`ListShare`), the user's own sharding kept as it is (their
`DistributedSampler`, also inside a batch sampler), and data that shards itself (an
`IterableDataset` declaring `shards_itself = True`) run in step (`StreamShare`). Validation, `test`
and `predict` split their data with `evaluation_shards` instead, each sample once, no padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from . import distributed

__all__ = ["SHARDS_ITSELF", "ListShare", "StreamShare", "distributed_sampler", "shard", "shards_itself"]

SHARDS_ITSELF = "shards_itself"
"""The attribute by which data declares that each process's iterator yields only that process's share.

An `IterableDataset` (or any iterable given to `fit`, or the data set of a `DataLoader`) whose
`shards_itself` is True reads the process's rank and the number of processes itself (and
`torch.utils.data.get_worker_info()` in loader processes) and yields its own share; torch forbids a
`DistributedSampler` with an `IterableDataset`, so nothing else can split it.
"""

_END = object()


def shards_itself(source: object) -> bool:
    """Whether `source`, or the data set of a `DataLoader` `source`, declares `shards_itself = True`."""
    dataset = source.dataset if isinstance(source, DataLoader) else source
    return getattr(dataset, SHARDS_ITSELF, False) is True


def shard(dataset: Iterable[Any]) -> Iterable[Any]:
    """This rank's share of the training data `dataset`, for as many steps as every other rank's.

    A torchmanager `Dataset` or a `DataLoader` gets a `DistributedSampler`, which pads the shares by
    repeating the first few items (with `drop_last` it drops the tail instead); a `DataLoader` the
    user sharded (a `DistributedSampler` as its sampler, or as the `sampler` of its batch sampler)
    is kept as it is; a list of batches is dealt out batch by batch, its first batches dealt again
    when the count does not divide (`ListShare`); data that shards itself runs in step
    (`StreamShare`).

    Raises:
        TypeError: The data set is an iterable that cannot be split (give a DataLoader instead), or
            an `IterableDataset` that does not say it shards itself.
        ValueError: The user's `DistributedSampler` was made for another number of processes or rank.
    """
    world, rank = distributed.get_world_size(), distributed.get_rank()
    if world == 1:
        return dataset
    if shards_itself(dataset):
        return StreamShare(dataset)
    if callable(getattr(dataset, "shard", None)):
        dataset.shard(world, rank)  # type: ignore[attr-defined]
        return dataset
    if isinstance(dataset, DataLoader):
        return _shard_loader(dataset, world, rank)
    if isinstance(dataset, (list, tuple)):
        return ListShare(dataset, world, rank)
    raise TypeError(
        "Under torchrun each process needs its share of the data, and this iterable cannot be split; give a "
        "torchmanager Dataset, a DataLoader or a list of batches, or make it yield each process's share and set "
        f"its `{SHARDS_ITSELF} = True`. Received: dataset={type(dataset).__name__}"
    )


class ListShare(list[Any]):
    """One rank's training share of a list of batches: batches `rank`, `rank + world`, ...

    When the number of batches does not divide by `world`, the first batches are dealt again, so
    every rank gets `ceil(len(whole) / world)` batches (as `DistributedSampler` pads its shares).

    Attributes:
        whole: The list the share was dealt from (evaluation splits it again, without padding).
    """

    def __init__(self, whole: Sequence[Any], world: int, rank: int) -> None:
        total = math.ceil(len(whole) / world) * world
        super().__init__(whole[i % len(whole)] for i in range(rank, total, world))
        self.whole = whole


class StreamShare:
    """Training data that shards itself, run in step: this process's batches, while every process has one.

    After drawing each batch the processes agree (one small collective on the host, no device sync)
    whether every one of them drew one. When a process's share has run out, every process ends the
    epoch there, and the batches the others drew past that point are not trained on (as
    `DistributedSampler(drop_last=True)` drops a tail): uneven shares never leave a process waiting
    in a collective that another will not join. Make the shares as even as the data allows.

    Attributes:
        dataset: The data that shards itself (its generators and `set_epoch` are the run's).
    """

    def __init__(self, dataset: Iterable[Any]) -> None:
        self.dataset = dataset

    @property
    def loader(self) -> DataLoader[Any] | None:
        """The `DataLoader` the data is read through, if any (its loader processes are protected)."""
        return self.dataset if isinstance(self.dataset, DataLoader) else getattr(self.dataset, "loader", None)

    def set_epoch(self, epoch: int) -> None:
        """Tell the data the epoch (`data_position.set_epoch`): a stream may seed its order or its shards by it."""
        from .data_position import set_epoch  # data_position imports the loader helpers of `distributed`

        set_epoch(self.dataset, epoch)

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.dataset)
        while True:
            batch = next(iterator, _END)
            if distributed.any_process(batch is _END):
                return
            yield batch

    def __repr__(self) -> str:
        return f"StreamShare({self.dataset!r})"


def distributed_sampler(loader: DataLoader[Any]) -> Any:
    """The sampler the user sharded `loader` with, or None: a `DistributedSampler` (or a sampler with its
    `num_replicas` and `rank`) as the loader's sampler, as its batch sampler, or as its batch sampler's `sampler`."""
    batch_sampler = loader.batch_sampler
    for part in (loader.sampler, batch_sampler, getattr(batch_sampler, "sampler", None)):
        if isinstance(part, DistributedSampler) or (
            isinstance(getattr(part, "num_replicas", None), int) and isinstance(getattr(part, "rank", None), int)
        ):
            return part
    return None


def _shard_loader(loader: DataLoader[Any], world: int, rank: int) -> DataLoader[Any]:
    """`loader` when the user sharded it, else a copy whose `DistributedSampler` gives this rank its share."""
    own = distributed_sampler(loader)
    if own is not None:
        if (own.num_replicas, own.rank) != (world, rank):
            raise ValueError(
                "The DataLoader's distributed sampler was made for another process group: build it under torchrun "
                "without `num_replicas` and `rank` (they default to the group's). Received: sampler "
                f"num_replicas={own.num_replicas}, rank={own.rank}; world_size={world}, rank={rank}"
            )
        return loader
    refusal = (
        "Under torchrun each process needs its share of the data, and {what}: give the DataLoader a "
        "`DistributedSampler` yourself (combining it with your sampling), or a torchmanager Dataset. Received: {received}"
    )
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "Under torchrun each process needs its share of the data, and an IterableDataset cannot be split by "
            "index (torch refuses a DistributedSampler with it): make its `__iter__` yield only this process's "
            "share (by the rank, and by `torch.utils.data.get_worker_info()` in loader processes) and set its "
            f"`{SHARDS_ITSELF} = True`. Received: dataset={type(loader.dataset).__name__}"
        )
    if loader.batch_size is None:
        raise TypeError(
            refusal.format(
                what="a custom `batch_sampler` cannot be split safely",
                received=f"batch_sampler={type(loader.batch_sampler).__name__}",
            )
        )
    if not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        raise TypeError(
            refusal.format(
                what="replacing this loader's own sampler would drop its order",
                received=f"sampler={type(loader.sampler).__name__}",
            )
        )
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=world,
        rank=rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        drop_last=loader.drop_last,
    )
    return distributed.rebuilt_loader(loader, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last)
