"""Data positions: where a pass over indexed data is, and a pass that continues there without loading the rest.

Who owns what: this module reads a data source's index order without loading items. A position is
global: the number of samples of the epoch's order (every process's share together) that are done,
the same number on every process, so that a run saved by N processes can resume on M.
`samples_done` turns the batches this process did into that number, `resume_iterator` continues a
pass there: it draws the epoch's order exactly as a fresh pass would (the same generators, the same
numbers taken from them, at the same moments: a sampler's draws at the end of its order happen when
the pass reaches it), drops what is done, and loads only the rest, with the loader's own collate,
workers, pinning and `drop_last`. `set_epoch` tells a source's sampler and its per-item seeds the
epoch. The loop decides when to use them; what has no indices (an `IterableDataset`, a list of
batches, a generator) it replays, drawing and dropping what is done.

Sources with indices: a `DataLoader` over a map-style data set, with its sampler or torch's
`BatchSampler` over a sampler (a `DistributedSampler` included), and a torchmanager `Dataset` that
keeps its own `__iter__`. A batch sampler of another class is replayed.
"""

from __future__ import annotations

import copy
import itertools
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, Sampler

from .distributed import rebuilt_loader

__all__ = ["resume_iterator", "samples_done", "set_epoch"]


def set_epoch(source: Iterable[Any], epoch: int) -> None:
    """Tell the source the epoch: a `DistributedSampler` reshuffles for it, per-item seeds draw its items.

    A torchmanager `Dataset` is told itself; a `DataLoader`'s sampler, batch sampler and data set are
    told when they have a `set_epoch` (a `DistributedSampler`, `torchmanager_data.SeededItems`).
    """
    own = getattr(source, "set_epoch", None)
    if callable(own):
        own(epoch)
        return
    if not isinstance(source, DataLoader):
        return
    told: set[int] = set()
    for part in (source.sampler, source.batch_sampler, getattr(source.batch_sampler, "sampler", None), source.dataset):
        part_set_epoch = getattr(part, "set_epoch", None)
        if callable(part_set_epoch) and id(part) not in told:
            told.add(id(part))
            part_set_epoch(epoch)


def samples_done(source: Iterable[Any], batches_done: int) -> int | None:
    """The global position after this process's first `batches_done` batches of the epoch.

    Every process steps through batches of the same size, so the position is `batches_done` times
    the batch size times the number of processes sharing the sampler.

    Returns:
        The number of samples of the epoch's order done on all processes together, or None for a
        source without indices (the loop counts batches and replays).
    Raises:
        ValueError: `batches_done` is not an int >= 0.
    """
    _check_count("batches_done", batches_done)
    indexed = _indexed(source)
    if indexed is None:
        return None
    return batches_done * indexed.batch_size * _world(indexed.sampler)


def resume_iterator(source: Iterable[Any], samples_done: int) -> Iterator[Any] | None:
    """What a pass over `source` yields from the global position `samples_done` on, loading nothing before it.

    Call it where a fresh pass would start (after `set_epoch`, with the generators as they were when
    the epoch began): it takes from every generator what a fresh pass takes (the loader's base seed
    for its workers, the sampler's shuffle), so the next epoch is the same too. Under a
    `DistributedSampler` the position is in the order of all processes together: on as many processes
    as saved it, each continues its own share; on another number, the rest of the order is dealt out
    again (and padded, or cut with `drop_last`, as `DistributedSampler` does).

    Args:
        source: A torchmanager `Dataset` or a `DataLoader`.
        samples_done: The global position, as `samples_done()` gave it.
    Returns:
        The rest of the pass (what `iter(source)` would yield from there), or None when the source has
        no indices to skip by: then replay it.
    Raises:
        ValueError: `samples_done` is not an int >= 0, or lies past the end of the epoch's order.
    """
    _check_count("samples_done", samples_done)
    indexed = _indexed(source)
    if indexed is None:
        return None
    loader = indexed.loader
    base_generator = loader.generator if loader.generator is not None else torch.default_generator
    base_state = base_generator.get_state()
    if indexed.draws_base_seed:
        torch.empty((), dtype=torch.int64).random_(generator=loader.generator)  # as a new iterator does
    rest = _rest_of_order(indexed.sampler, samples_done)
    workers_generator = torch.Generator()
    workers_generator.set_state(base_state)  # the new loader draws the same base seed for its workers
    if loader.batch_size is None and loader.batch_sampler is None:
        resumed = rebuilt_loader(
            loader, batch_size=None, sampler=rest, generator=workers_generator, persistent_workers=False
        )
    else:
        batches = BatchSampler(rest, indexed.batch_size, indexed.drop_last)  # torch's, as the full pass batches
        resumed = rebuilt_loader(loader, batch_sampler=batches, generator=workers_generator, persistent_workers=False)
    unpack = indexed.unpack
    return iter(resumed) if unpack is None else (unpack(batch) for batch in resumed)


@dataclass(frozen=True)
class _Indexed:
    """How a source draws its order: `sampler`'s indices, in batches of `batch_size` (1 without batching)."""

    loader: DataLoader[Any]
    sampler: Sampler[Any] | Iterable[Any]
    batch_size: int
    drop_last: bool
    draws_base_seed: bool
    unpack: Callable[[Any], Any] | None


def _indexed(source: Iterable[Any]) -> _Indexed | None:
    """The index order of `source`, or None when it has none this module can read."""
    unpack: Callable[[Any], Any] | None = None
    if isinstance(source, DataLoader):
        loader = source
        persistent = loader.persistent_workers and loader.num_workers > 0
        draws_base_seed = not (persistent and getattr(loader, "_iterator", None) is not None)  # torch's reuse
    elif _iterates_its_loader(source):
        loader, unpack = source.loader, source.unpack_data  # type: ignore[attr-defined]
        draws_base_seed = True  # the data set draws it on every pass, new workers or not
    else:
        return None
    if isinstance(loader.dataset, IterableDataset):
        return None
    batch_sampler = loader.batch_sampler
    if batch_sampler is None:  # no automatic batching: each index is one batch
        sampler, batch_size, drop_last = loader.sampler, 1, False
    elif type(batch_sampler) is BatchSampler:
        sampler, batch_size, drop_last = batch_sampler.sampler, batch_sampler.batch_size, batch_sampler.drop_last
    else:
        return None
    if not hasattr(sampler, "__len__"):
        return None  # it may never end: drawing it whole could take forever
    return _Indexed(loader, sampler, batch_size, drop_last, draws_base_seed, unpack)


def _iterates_its_loader(source: object) -> bool:
    """Whether `source` is a torchmanager `Dataset` whose `__iter__` is the one that unpacks `source.loader`'s batches."""
    module = sys.modules.get("torchmanager_data.dataset")  # imported if `source` is one; core does not depend on it
    dataset_class: Any = getattr(module, "Dataset", None)
    return (
        isinstance(dataset_class, type)
        and isinstance(source, dataset_class)
        and getattr(type(source), "__iter__", None) is getattr(dataset_class, "__iter__", None)
    )


def _world(sampler: object) -> int:
    """The number of processes sharing `sampler`'s order."""
    return sampler.num_replicas if isinstance(sampler, DistributedSampler) else 1


def _rest_of_order(sampler: Sampler[Any] | Iterable[Any], done: int) -> _Rest:
    """This process's indices after the global position `done`, drawn as a fresh pass draws them."""
    if not isinstance(sampler, DistributedSampler):
        total = len(sampler)  # type: ignore[arg-type]
        _check_position(done, total)
        drawn = iter(sampler)
        next(itertools.islice(drawn, done, done), None)  # what the pass draws up to the position; the rest as it goes
        return _Rest(drawn, total - done)
    world, rank = sampler.num_replicas, sampler.rank
    shares = [list(_share(sampler, other)) for other in range(world)]  # a DistributedSampler draws from its own seed
    order = [shares[i % world][i // world] for i in range(len(shares[0]) * world)]
    _check_position(done, len(order))
    rest = order[done:]
    uneven = len(rest) % world  # only when the position came from another number of processes
    if uneven:
        rest = rest[: len(rest) - uneven] if sampler.drop_last else rest + order[: world - uneven]
    mine = rest[rank::world]
    return _Rest(iter(mine), len(mine))


def _share(sampler: DistributedSampler[Any], rank: int) -> Iterator[Any]:
    """The indices `sampler` gives process `rank` this epoch (the sampler itself is left as it is)."""
    other = copy.copy(sampler)
    other.rank = rank
    return iter(other)


class _Rest(Sampler[Any]):
    """The rest of one pass's order: an iterator of indices (iterated once), and how many it yields."""

    def __init__(self, order: Iterator[Any], length: int) -> None:
        self.order, self.length = order, length

    def __iter__(self) -> Iterator[Any]:
        return self.order

    def __len__(self) -> int:
        return self.length


def _check_count(name: str, value: object) -> None:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ValueError(f"`{name}` must be an int >= 0. Received: {name}={value!r}")


def _check_position(done: int, total: int) -> None:
    if done > total:
        raise ValueError(
            f"The position lies past the end of the epoch's order of {total} samples: resume with the data the run "
            f"was saved with. Received: samples_done={done}"
        )
