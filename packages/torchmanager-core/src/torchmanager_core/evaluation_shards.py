"""Validation, `test` and `predict` under torchrun: each sample exactly once, results of the whole data set.

Who owns what: `training_shards.shard` deals out the training data padded, so that every rank
steps as often (DDP needs it); counting a padding duplicate would make evaluation values wrong.
This module splits the batches one process would make, drawn as one process draws them, into
whole batches: batch `i` goes to rank `i mod world`, without padding, so shares differ by a batch
at most and may be empty. Data sharded for training (a `DistributedSampler`, a `ListShare`) is
evaluated whole; data that shards itself (`training_shards.shards_itself`) is evaluated as each
rank's iterator yields it. A split `DataLoader` is made once per loader and number of processes,
its loader processes kept across passes. `gather` puts `predict`'s outputs back in the data set's
order on every rank, and `join` lets a rank without a batch take part in the reductions of the
pass's values.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, Sampler, SequentialSampler

from . import distributed, training_shards

__all__ = ["Share", "gather", "interleave", "join", "split"]


class Share:
    """One rank's whole batches of an evaluation data set (`split` makes it; iterate it like the data set).

    Attributes:
        batches: The rank's batches, a `DataLoader` or a list (or the data itself when it shards itself).
        unpack_data: The data set's own unpacking (a torchmanager `Dataset`'s), applied to each
            batch as the data set applies it, or None.
        dealt: Whether batch `i` of the whole data set is this share's batch `i // world` (`split`
            dealt it), rather than the data's own share (data that shards itself).
        redraw_base_seed: Whether each pass takes the base seed a new loader iterator takes from the
            loader's generator, although the loader processes are kept (the user's loader made new ones).
    """

    def __init__(
        self,
        batches: Iterable[Any],
        unpack_data: Callable[[Any], Any] | None = None,
        *,
        dealt: bool = True,
        redraw_base_seed: bool = False,
    ) -> None:
        self.batches = batches
        self.unpack_data = unpack_data
        self.dealt = dealt
        self.redraw_base_seed = redraw_base_seed

    @property
    def loader(self) -> DataLoader[Any] | None:
        """The `DataLoader` the share is read through, if any (its loader processes are protected)."""
        return self.batches if isinstance(self.batches, DataLoader) else getattr(self.batches, "loader", None)

    def __iter__(self) -> Iterator[Any]:
        loader = self.batches
        if self.redraw_base_seed and isinstance(loader, DataLoader) and getattr(loader, "_iterator", None) is not None:
            # the kept processes need no new seed, but a new iterator takes one: the generator moves on alike
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
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
    data set in its order (also inside a batch sampler), and a `ListShare` for the list it was dealt
    from. Data that shards itself is evaluated as each rank's iterator yields it. The split loader
    is made once per loader and number of processes and keeps its loader processes across passes.

    Raises:
        TypeError: An iterable that cannot be split by index (an `IterableDataset` that does not shard
            itself, a generator), or a distributed sampler whose whole order is unknown.
    """
    world, rank = distributed.get_world_size(), distributed.get_rank()
    if world == 1 or isinstance(dataset, Share):
        return dataset
    if isinstance(dataset, training_shards.StreamShare):
        dataset = dataset.dataset
    if training_shards.shards_itself(dataset):
        return Share(dataset, dealt=False)
    if isinstance(dataset, training_shards.ListShare):
        dataset = dataset.whole
    if isinstance(dataset, (list, tuple)):
        return Share(list(dataset[rank::world]))
    if isinstance(dataset, DataLoader):
        return _split_loader(dataset, rank, world)
    loader, unpack = getattr(dataset, "loader", None), getattr(dataset, "unpack_data", None)
    if isinstance(loader, DataLoader) and callable(unpack):  # a torchmanager Dataset: batches of its loader
        return _split_loader(loader, rank, world, unpack)
    raise TypeError(
        "Under torchrun each process evaluates its share of the batches, and this iterable cannot be split; give a "
        "torchmanager Dataset, a DataLoader or a list of batches, or make it yield each process's share and set its "
        f"`{training_shards.SHARDS_ITSELF} = True`. Received: dataset={type(dataset).__name__}"
    )


_split_loaders: weakref.WeakKeyDictionary[DataLoader[Any], tuple[tuple[int, int], DataLoader[Any]]] = (
    weakref.WeakKeyDictionary()
)
"""The split loader made for each loader, with the (rank, world) it was made for: made again only for another."""


def _split_loader(loader: DataLoader[Any], rank: int, world: int, unpack: Callable[[Any], Any] | None = None) -> Share:
    """`loader` yielding only the batches dealt to `rank` (its index sampler's items, dealt out), made once.

    Its loader processes live across passes (`persistent_workers`), so that no pass forks new ones
    from a process with threads; each pass still takes from the loader's generator what a new
    iterator of `loader` takes.
    """
    made = _split_loaders.get(loader)
    if made is None or made[0] != (rank, world):
        made = (rank, world), _dealt_loader(loader, rank, world)
        _split_loaders[loader] = made
    kept = made[1].persistent_workers and not loader.persistent_workers
    return Share(made[1], unpack, redraw_base_seed=kept)


def _dealt_loader(loader: DataLoader[Any], rank: int, world: int) -> DataLoader[Any]:
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "Under torchrun each process evaluates its share of the batches, and an IterableDataset cannot be split by "
            "index: make its `__iter__` yield only this process's share (by the rank, and by "
            "`torch.utils.data.get_worker_info()` in loader processes) and set its "
            f"`{training_shards.SHARDS_ITSELF} = True`. Received: dataset={type(loader.dataset).__name__}"
        )
    persistent = loader.num_workers > 0
    if loader.batch_sampler is not None:
        order, known = _whole_order(loader.batch_sampler)
        dealt = _Dealt(order, rank, world, agree=not known)
        return distributed.rebuilt_loader(loader, batch_sampler=dealt, persistent_workers=persistent)
    order, known = _whole_order(loader.sampler)  # no automatic batching: each index is a batch
    dealt = _Dealt(order, rank, world, agree=not known)
    return distributed.rebuilt_loader(loader, batch_size=None, sampler=dealt, persistent_workers=persistent)


def _whole_order(sampler: Iterable[Any]) -> tuple[Iterable[Any], bool]:
    """The sampler of the whole data set behind `sampler`, and whether every rank draws the same order from it.

    A batch sampler over a `DistributedSampler` is iterated as a copy drawing from the whole data set
    in the sampler's order (torch's `BatchSampler`, or another class keeping the sampler as `sampler`).

    Raises:
        TypeError: A distributed sampler whose whole order is unknown (not a `DistributedSampler`).
    """
    if isinstance(sampler, DistributedSampler):
        return _WholeOf(sampler), True  # seeded: every rank draws the same order
    if _distributed_like(sampler):
        raise TypeError(
            "Under torchrun each process evaluates its share of the batches, and this sampler draws one process's "
            "share of an order it does not show: give the evaluation data without it, or a DistributedSampler. "
            f"Received: sampler={type(sampler).__name__}"
        )
    inner = getattr(sampler, "sampler", None)
    if inner is None or not (isinstance(inner, DistributedSampler) or _distributed_like(inner)):
        if type(sampler) is BatchSampler:
            return sampler, isinstance(sampler.sampler, SequentialSampler)
        return sampler, isinstance(sampler, SequentialSampler)
    whole_inner, _ = _whole_order(inner)
    if type(sampler) is BatchSampler:
        return BatchSampler(whole_inner, sampler.batch_size, sampler.drop_last), True
    whole = copy.copy(sampler)  # the user's batching over the whole order (its own draws, if any, are agreed on)
    whole.sampler = whole_inner  # type: ignore[attr-defined]
    return whole, False


def _distributed_like(sampler: object) -> bool:
    """Whether `sampler` draws one process's share: it has a `DistributedSampler`'s `num_replicas` and `rank`."""
    return isinstance(getattr(sampler, "num_replicas", None), int) and isinstance(getattr(sampler, "rank", None), int)


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
    """Every rank's outputs for the batches of a `split` data set, on every rank: in the data set's order, or in
    rank order (rank 0's first, each in its iterator's order) for data that shards itself."""
    if not isinstance(dataset, Share):
        return outputs
    shares = distributed.gather_objects(outputs)
    return interleave(shares) if dataset.dealt else [output for share in shares for output in share]


class PassValues(Protocol):
    """What `join` reads and fills: the values of a pass (`EpochValues`); `counted` is False on a rank whose pass
    had no batch, so that the reductions add nothing of it (`distributed.reduce_states`)."""

    counted: bool

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class _TensorSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype


_KEPT = {("losses", "calls"), ("metrics", "calls")}
"""Numbers a blank takes from the rank it copies: whether the losses' and metrics' values mean anything."""

_PENDING = "pending"
"""The key of a `MeanTracker`'s batches waiting to be summed (`{"pending": {name: [[mean, n], ...]}}`): a rank
without them blanks them as zeros of 0 samples, so that it sums (and reduces) the same names and shapes."""


def join(values: PassValues, had_batches: bool, device: torch.device) -> bool:
    """Whether any rank had a batch; a rank that had none gets the pass's values with nothing counted.

    Every rank calls it after its pass, before the values are read. A rank without a batch has no
    running sums for the values the others report (nor the shape a mean takes at its first
    batch), so the reductions that read them would not match: it takes their layout (shapes and
    dtypes, no data) from the first rank with a batch, zeros for sums and counts, its losses' and
    metrics' reset states where they fit, and is marked as having counted nothing (`values.counted`),
    so that every declared reduction of a metric (a "cat", a "max", a "mean"...) leaves it out.
    """
    flags = distributed.all_flags(had_batches)
    if all(flags) or not any(flags):
        return any(flags)
    source = flags.index(True)
    layout = distributed.gather_objects(_spec(values.state_dict()) if distributed.get_rank() == source else None)
    if not had_batches:
        values.load_state_dict(_blank(values.state_dict(), layout[source], device, ()))
        values.counted = False
    return True


def _spec(state: Any) -> Any:
    """`state` with each tensor (in lists too) replaced by its shape and dtype."""
    if isinstance(state, torch.Tensor):
        return _TensorSpec(tuple(state.shape), state.dtype)
    if isinstance(state, Mapping):
        return {key: _spec(item) for key, item in state.items()}
    if isinstance(state, list):
        return [_spec(item) for item in state]
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
    if isinstance(spec, list) and len(path) >= 2 and path[-2] == _PENDING:  # a tracker's waiting `[mean, n]`s
        return [[_blank(None, part, device, (*path, i)) for part in pair] for i, pair in enumerate(spec)]
    if isinstance(spec, list):  # a "cat" state: this rank's own (none)
        return own if isinstance(own, list) else []
    return spec
