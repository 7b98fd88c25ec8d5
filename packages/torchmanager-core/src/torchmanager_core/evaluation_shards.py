"""Validation, `test` and `predict` under torchrun: each sample exactly once, results of the whole data set.

Who owns what: `distributed.shard` deals out the training data padded, so that every rank steps
as often (DDP needs it); counting a padding duplicate would make evaluation values wrong. This
module splits the batches one process would make, drawn as one process draws them, into whole
batches: batch `i` goes to rank `i mod world`, without padding, so shares differ by a batch at
most and may be empty. Data sharded for training (a `DistributedSampler`, a `ListShare`) is
evaluated whole. `gather` puts `predict`'s outputs back in the data set's order on every rank, and
`join` lets a rank without a batch take part in the reductions of the pass's values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, Sampler, SequentialSampler

from . import distributed

__all__ = ["Share", "gather", "interleave", "join", "split"]


class Share:
    """One rank's whole batches of an evaluation data set (`split` makes it; iterate it like the data set).

    Attributes:
        batches: The rank's batches, a `DataLoader` or a list.
        unpack_data: The data set's own unpacking (a torchmanager `Dataset`'s), applied to each
            batch as the data set applies it, or None.
    """

    def __init__(self, batches: Iterable[Any], unpack_data: Callable[[Any], Any] | None = None) -> None:
        self.batches = batches
        self.unpack_data = unpack_data

    def __iter__(self) -> Iterator[Any]:
        if self.unpack_data is None:
            return iter(self.batches)
        return map(self.unpack_data, self.batches)

    def __len__(self) -> int:
        """The rank's number of batches (TypeError when its sampler has no length)."""
        return len(self.batches)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Share({self.batches!r})"


def split(dataset: Iterable[Any]) -> Iterable[Any]:
    """This rank's whole batches of `dataset` for an evaluation; `dataset` itself in a single process.

    A list of batches is dealt out as it is; a `DataLoader` (or a torchmanager `Dataset`'s
    loader) keeps every option, and its sampler is iterated as one process would (a shuffled
    order is drawn from the same generator), then dealt out. When the ranks drew different orders
    (their random states differ), rank 0's is used. A `DistributedSampler` stands for the whole
    data set in its order, and a `ListShare` for the list it was dealt from.

    Raises:
        TypeError: An iterable that cannot be split by index (an `IterableDataset`, a generator),
            or a custom batch sampler over a `DistributedSampler`.
    """
    world, rank = distributed.get_world_size(), distributed.get_rank()
    if world == 1 or isinstance(dataset, Share):
        return dataset
    if isinstance(dataset, distributed.ListShare):
        dataset = dataset.whole
    if isinstance(dataset, (list, tuple)):
        return Share(list(dataset[rank::world]))
    if isinstance(dataset, DataLoader):
        return Share(_split_loader(dataset, rank, world))
    loader, unpack = getattr(dataset, "loader", None), getattr(dataset, "unpack_data", None)
    if isinstance(loader, DataLoader) and callable(unpack):  # a torchmanager Dataset: batches of its loader
        return Share(_split_loader(loader, rank, world), unpack)
    raise TypeError(
        "Under torchrun each process evaluates its share of the batches, and this iterable cannot be split; give a "
        f"torchmanager Dataset, a DataLoader or a list of batches. Received: dataset={type(dataset).__name__}"
    )


def _split_loader(loader: DataLoader[Any], rank: int, world: int) -> DataLoader[Any]:
    """`loader` yielding only the batches dealt to `rank` (its index sampler's items, dealt out)."""
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "Under torchrun each process evaluates its share of the batches, and an IterableDataset cannot be split by "
            f"index; give a map-style dataset. Received: dataset={type(loader.dataset).__name__}"
        )
    if loader.batch_sampler is not None:
        order, known = _whole_order(loader.batch_sampler)
        return distributed.rebuilt_loader(loader, batch_sampler=_Dealt(order, rank, world, agree=not known))
    order, known = _whole_order(loader.sampler)  # no automatic batching: each index is a batch
    return distributed.rebuilt_loader(loader, batch_size=None, sampler=_Dealt(order, rank, world, agree=not known))


def _whole_order(sampler: Iterable[Any]) -> tuple[Iterable[Any], bool]:
    """The sampler of the whole data set behind `sampler`, and whether every rank draws the same order from it.

    Raises:
        TypeError: A custom batch sampler over a `DistributedSampler` (its whole order is unknown).
    """
    if type(sampler) is BatchSampler:
        inner, known = _whole_order(sampler.sampler)
        if inner is sampler.sampler:
            return sampler, known
        return BatchSampler(inner, sampler.batch_size, sampler.drop_last), known
    if isinstance(sampler, DistributedSampler):
        return _WholeOf(sampler), True  # seeded: every rank draws the same order
    if isinstance(getattr(sampler, "sampler", None), DistributedSampler):
        raise TypeError(
            "Under torchrun each process evaluates its share of the batches, and this batch sampler draws from one "
            "process's share (a DistributedSampler): give the evaluation data without a DistributedSampler. "
            f"Received: batch_sampler={type(sampler).__name__}"
        )
    return sampler, isinstance(sampler, SequentialSampler)


class _WholeOf(Sampler[int]):
    """The whole data set in the order of a `DistributedSampler` (its seed and epoch), without padding."""

    def __init__(self, sampler: DistributedSampler[Any]) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        whole = copy.copy(self.sampler)  # read when iterated: the epoch set last counts
        whole.num_replicas, whole.rank, whole.drop_last = 1, 0, False
        whole.num_samples = whole.total_size = len(self)
        return iter(whole)


class _Dealt(Sampler[Any]):
    """Items `rank`, `rank + world`, ... of the sequence `whole` yields (indices, or batches of them).

    `whole` is iterated in full, lazily, on every rank (its random draws happen as in one
    process, after the loader's own); with `agree`, rank 0's sequence is used everywhere.
    """

    def __init__(self, whole: Iterable[Any], rank: int, world: int, *, agree: bool) -> None:
        self.whole, self.rank, self.world, self.agree = whole, rank, world, agree

    def __len__(self) -> int:
        return len(range(self.rank, len(self.whole), self.world))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        items = list(self.whole)
        if self.agree:
            items = distributed.agree_on(items)
        yield from items[self.rank :: self.world]


def interleave(shares: Sequence[Sequence[Any]]) -> list[Any]:
    """The sequence that was dealt out into `shares` (item `i` to share `i mod len(shares)`), put back in order."""
    world = len(shares)
    return [shares[i % world][i // world] for i in range(sum(map(len, shares)))]


def gather(outputs: list[Any], dataset: Iterable[Any]) -> list[Any]:
    """Every rank's outputs for the batches of a `split` data set, in the data set's order, on every rank."""
    if not isinstance(dataset, Share):
        return outputs
    return interleave(distributed.gather_objects(outputs))


class PassValues(Protocol):
    """What `join` reads and fills: the values of a pass (`EpochValues`)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class _TensorSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype


_KEPT = {("losses", "calls"), ("metrics", "calls")}
"""Numbers a blank takes from the rank it copies: whether the losses' and metrics' values mean anything."""


def join(values: PassValues, had_batches: bool, device: torch.device) -> bool:
    """Whether any rank had a batch; a rank that had none gets the pass's values with nothing counted.

    Every rank calls it after its pass, before the values are read. A rank without a batch has no
    running sums for the values the others report (nor the shape a mean takes at its first
    batch), so the reductions that read them would not match: it takes their layout (shapes and
    dtypes, no data) from the first rank with a batch, zeros for sums and counts, its losses' and
    metrics' reset states where they fit.
    """
    flags = distributed.all_flags(had_batches)
    if all(flags) or not any(flags):
        return any(flags)
    source = flags.index(True)
    layout = distributed.gather_objects(_spec(values.state_dict()) if distributed.get_rank() == source else None)
    if not had_batches:
        values.load_state_dict(_blank(values.state_dict(), layout[source], device, ()))
    return True


def _spec(state: Any) -> Any:
    """`state` with each tensor replaced by its shape and dtype."""
    if isinstance(state, torch.Tensor):
        return _TensorSpec(tuple(state.shape), state.dtype)
    if isinstance(state, Mapping):
        return {key: _spec(item) for key, item in state.items()}
    return state


def _blank(own: Any, spec: Any, device: torch.device, path: tuple[Any, ...]) -> Any:
    """`spec`'s layout with nothing counted: `own` tensors that fit it (reset states), else zeros; numbers 0."""
    if isinstance(spec, _TensorSpec):
        if isinstance(own, torch.Tensor) and tuple(own.shape) == spec.shape and own.dtype == spec.dtype:
            return own
        return torch.zeros(spec.shape, dtype=spec.dtype, device=own.device if isinstance(own, torch.Tensor) else device)
    if isinstance(spec, Mapping):
        mine = own if isinstance(own, Mapping) else {}
        return {key: _blank(mine.get(key), item, device, (*path, key)) for key, item in spec.items()}
    if isinstance(spec, (int, float)) and not isinstance(spec, bool) and path not in _KEPT:
        return type(spec)(0)
    if isinstance(spec, list):  # values waiting to be summed, a "cat" state: this rank's own (none)
        return own if isinstance(own, list) else []
    return spec
