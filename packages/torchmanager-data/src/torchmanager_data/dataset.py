"""`Dataset`: a map-style `torch.utils.data.Dataset` that is also its own batch loader.

Who owns what: this module owns the dataset/loader pairing (length, batching, the cached
`DataLoader`, unpacking a batch into input and target); `distributed` injects a
`DistributedSampler`, `preprocessed` adds transforms, `batching` wraps plain torch datasets,
`tensors` is the in-memory dataset that `Dataset.from_tensor_slices` makes, `item_seeds` gives
each item its own random seed.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as _TorchDataset
from torch.utils.data.distributed import DistributedSampler

from ._options import (
    CPU,
    DEFAULT_TIMEOUT,
    check_batch_size,
    check_num_workers,
    check_timeout,
    check_world,
    pin_memory_for,
    to_device,
)
from .errors import LoaderTimeoutError
from .item_seeds import SeededItems

if TYPE_CHECKING:
    from .tensors import Slices

__all__ = ["Dataset"]

T = TypeVar("T")

_LoaderKey = tuple[tuple[Any, ...], object, object]
"""(batch size, drop_last, shuffle, num_workers, pin_memory, persistent_workers, timeout, multiprocessing
context), sampler, generator."""


class Dataset(_TorchDataset[T], abc.ABC):
    """A dataset that iterates in batches: `torch.utils.data.Dataset` and `DataLoader` in one.

    Subclasses define the `unbatched_len` property and `__getitem__` (one unbatched item).
    `len(dataset)` is the number of items, `batched_len` the number of batches, and iterating
    yields `(input, target)` batches from a `DataLoader` that is built once and rebuilt only
    when a loading option changes; batches are in pinned memory when `device` is a CUDA device.
    Under `torchrun`, `shard(world_size, rank)` gives it a `DistributedSampler`, and
    `set_epoch(epoch)` before each epoch reshuffles the shards.

    Each item's random draws (torch on the CPU, Python `random`, NumPy) come from a seed made of
    (`seed`, epoch, index), so augmentations are the same whatever the number of loader processes
    or training processes, and after a resume. Loader processes are started once and live across
    epochs (`persistent_workers`): forking new ones every epoch from a process with threads can hang.

    Args:
        batch_size: Items per batch, a positive int.
        device: Where the batches will be used; batches are pinned for a CUDA device.
        drop_last: Drop the last batch when it has fewer than `batch_size` items.
        num_workers: Loader processes; None uses the usable CPUs less one, at most 8.
        sampler: Optional sampler (or iterable) of indices, e.g. a `DistributedSampler`;
            it decides the order, so `shuffle` must then be False.
        shuffle: Reshuffle the items every epoch.
        generator: Optional `torch.Generator` driving the shuffle, for a reproducible order.
        seed: The seed of per-item randomness; None takes `generator.initial_seed()`, or without a
            generator `torch.initial_seed()` (what `torch.manual_seed` set), when the data set is
            made: seed torch before making the data, and every run draws the same items.
        persistent_workers: Keep the loader processes across epochs (they keep the copy of the
            data set they started with: pass False if `__getitem__` reads attributes you change
            between epochs).
        multiprocessing_context: How loader processes start: None (the platform's default, fork on
            Linux), "fork", "forkserver" (no fork of this process at all; needs an importable data
            set class and a `__main__` guard in the script) or "spawn".
        timeout: Seconds a batch may take to come from the loader processes before
            `LoaderTimeoutError` ends the wait (a stuck worker would otherwise hang the run).

    Raises:
        TypeError/ValueError: On a bad option (the message names it and its value).
    """

    seed_items: ClassVar[bool] = True
    """Whether the loader draws each item's randomness from (seed, epoch, index): False for data
    whose `__getitem__` draws no random numbers, to save the few microseconds it costs an item."""

    drop_last: bool
    generator: torch.Generator | None
    multiprocessing_context: str | None
    num_workers: int
    persistent_workers: bool
    sampler: Sampler[int] | Iterable[int] | None
    shuffle: bool

    def __init__(
        self,
        batch_size: int,
        /,
        *,
        device: torch.device | str = CPU,
        drop_last: bool = False,
        num_workers: int | None = None,
        sampler: Sampler[int] | Iterable[int] | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        persistent_workers: bool = True,
        multiprocessing_context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self.__loader: DataLoader[T] | None = None
        self.__loader_key: _LoaderKey | None = None
        self.batch_size = batch_size
        self.device = device
        self.drop_last = drop_last
        self.num_workers = check_num_workers(num_workers)
        self.sampler = sampler
        self.shuffle = shuffle
        self.generator = generator
        self.items = SeededItems(self, seed, generator=generator)
        self.persistent_workers = persistent_workers
        self.multiprocessing_context = multiprocessing_context
        self.timeout = check_timeout(timeout)
        self._check_order_options()

    @classmethod
    def from_tensor_slices(
        cls,
        data: Slices,
        /,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        device: torch.device | str = CPU,
        num_workers: int | None = 0,
        sampler: Sampler[int] | Iterable[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Dataset[Any]:
        """A `Dataset` over tensors in memory: item `i` is row `i` of each (Keras's `from_tensor_slices`).

        `Dataset.from_tensor_slices((x, y), batch_size=64, shuffle=True)` batches `x` of shape
        (N, ...) with `y` of shape (N, ...) into `(x_batch, y_batch)` pairs; a lone tensor gives
        `(batch, batch)` and a dict gives dict batches, as `unpack_data` says. Under `torchrun` it
        is sharded like any `Dataset`.

        Args:
            data: A tensor or NumPy array of shape (N, ...), or a tuple, list or dict of them
                (nested at will), all with the same N.
            batch_size, shuffle, drop_last, device, sampler, generator: As for `Dataset`.
            num_workers: Loader processes, 0 by default (unlike `Dataset`): the items are already
                in memory, so worker processes would only copy each batch once more between
                processes, and compete with torch's threads for the CPUs.

        Raises:
            TypeError: A part of `data` is neither a tensor, an array nor a non-empty tuple, list
                or dict (the message gives its path, e.g. `data[1]`).
            ValueError: The tensors' first dimensions differ, or a tensor has no dimension.
        """
        from .tensors import TensorSlices

        if getattr(batch_size, "shape", ()) != ():  # Keras's habit: `from_tensor_slices(x, y)`
            raise TypeError(
                "`from_tensor_slices` takes the inputs and labels as one tuple, `from_tensor_slices((x, y), "
                "batch_size=32)`: its second argument is the batch size. "
                f"Received: batch_size of shape {tuple(getattr(batch_size, 'shape', ()))}"
            )

        return TensorSlices(
            data,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            device=device,
            num_workers=num_workers,
            sampler=sampler,
            generator=generator,
        )

    @property
    def batch_size(self) -> int:
        """Items per batch; setting it checks that it is a positive int."""
        return self.__batch_size

    @batch_size.setter
    def batch_size(self, batch_size: int) -> None:
        self.__batch_size = check_batch_size(batch_size)

    @property
    def device(self) -> torch.device:
        """The device the batches are for; a CUDA device turns on pinned memory."""
        return self.__device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        self.__device = to_device(device)

    @property
    @abc.abstractmethod
    def unbatched_len(self) -> int:
        """The number of unbatched items."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> T:
        """Returns the unbatched item at `index`; the loader collates items into batches."""

    @property
    def sampled_len(self) -> int:
        """Items one epoch visits: the sampler's length when it has one, else `unbatched_len`."""
        if self.sampler is not None and hasattr(self.sampler, "__len__"):
            return len(self.sampler)  # type: ignore[arg-type]
        return self.unbatched_len

    @property
    def batched_len(self) -> int:
        """Batches per epoch: `sampled_len / batch_size`, rounded down with `drop_last`, else up."""
        if self.drop_last:
            return self.sampled_len // self.batch_size
        return math.ceil(self.sampled_len / self.batch_size)

    def shard(self, world_size: int, rank: int, *, seed: int = 0) -> DistributedSampler[int]:
        """Makes every epoch yield only this process's share of the items; returns the sampler.

        This is the hook for training under `torchrun` (the torchmanager core calls it with the
        process group's size and rank; to evaluate, it deals out the batches of `loader` whole,
        each item once, instead): the dataset gets a `DistributedSampler` that takes over
        `shuffle` (which becomes False; the sampler shuffles with `seed` plus the epoch given to
        `set_epoch`, the same order on every rank) and `drop_last`. A `DistributedSampler` the
        user already set for this `world_size` and `rank` is kept as it is.

        Raises:
            TypeError/ValueError: On a bad `world_size` or `rank`; when the dataset already has
                another sampler (replacing it would silently drop its order) or a
                `DistributedSampler` for another world size or rank.
        """
        check_world(world_size, rank)
        current = self.sampler
        if isinstance(current, DistributedSampler):
            if (current.num_replicas, current.rank) != (world_size, rank):
                raise ValueError(
                    "The dataset's DistributedSampler was made for another process group. "
                    f"Received: sampler num_replicas={current.num_replicas}, rank={current.rank}; "
                    f"world_size={world_size}, rank={rank}"
                )
            return current
        if current is not None:
            raise ValueError(
                "The dataset already has a sampler, which sharding would replace; pass a "
                "DistributedSampler yourself to combine them. "
                f"Received: sampler={type(current).__name__}"
            )
        sampler: DistributedSampler[int] = DistributedSampler(
            self, num_replicas=world_size, rank=rank, shuffle=self.shuffle, seed=seed, drop_last=self.drop_last
        )
        self.shuffle = False
        self.sampler = sampler
        return sampler

    def set_epoch(self, epoch: int) -> None:
        """Tells the sampler the epoch, so a `DistributedSampler` reshuffles differently each epoch.

        The items of the next pass draw their randomness as those of `epoch` (without a call, each
        pass draws the next epoch's). The training loop calls it before every epoch.
        """
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        self.items.set_epoch(epoch)

    @property
    def loader(self) -> DataLoader[T]:
        """The `DataLoader` iteration uses, rebuilt only when a loading option has changed."""
        pin_memory = pin_memory_for(self.device)
        workers = self.num_workers > 0
        options = (
            self.batch_size,
            self.drop_last,
            self.shuffle,
            self.num_workers,
            pin_memory,
            self.persistent_workers and workers,
            check_timeout(self.timeout) if workers else 0,
            self.multiprocessing_context if workers else None,
        )
        key: _LoaderKey = (options, self.sampler, self.generator)
        if self.__loader is None or not _same_key(self.__loader_key, key):
            self._check_order_options()
            self.__loader = DataLoader(
                self.items if self.seed_items else self,
                batch_size=self.batch_size,
                shuffle=self.shuffle,
                sampler=self.sampler,
                num_workers=self.num_workers,
                pin_memory=pin_memory,
                drop_last=self.drop_last,
                generator=self.generator,
                persistent_workers=options[5],
                timeout=options[6],
                multiprocessing_context=options[7],
            )
            self.__loader_key = key
        return self.__loader

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """Yields `(input, target)` batches, unpacked with `unpack_data`.

        Raises:
            ValueError: When an epoch would have no batch (empty dataset, or fewer items than
                `batch_size` with `drop_last`): an empty epoch is almost always a bug.
            LoaderTimeoutError: A batch took more than `timeout` seconds to come from the loader
                processes.
        """
        if self.batched_len <= 0:
            raise ValueError(
                "The dataset has no batch to iterate: it needs at least one item, and at least "
                "`batch_size` items when `drop_last=True`. Received: "
                f"unbatched_len={self.unbatched_len}, sampled_len={self.sampled_len}, "
                f"batch_size={self.batch_size}, drop_last={self.drop_last}"
            )
        self.items.seeds.start_pass()
        loader = self.loader
        if loader.persistent_workers and getattr(loader, "_iterator", None) is not None:
            # a new iterator draws its workers' base seed before the order: draw it too, so that every epoch
            # takes the same numbers from the generators whether the workers are new or not
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        try:
            for data in loader:
                yield self.unpack_data(data)
        except RuntimeError as error:
            if not str(error).startswith("DataLoader timed out"):
                raise
            raise LoaderTimeoutError(
                f"A batch took more than {loader.timeout} s to come from the {loader.num_workers} loader "
                "process(es): one is stuck (a deadlock after a fork, a read that hangs). Raise `timeout` if "
                "batches really take this long; under torchrun, `multiprocessing_context='forkserver'` forks no "
                f"loader from the training process. Received: timeout={loader.timeout}, "
                f"num_workers={loader.num_workers}"
            ) from error

    def __len__(self) -> int:
        """The unbatched length (`unbatched_len`), as torch's samplers expect."""
        return self.unbatched_len

    def __contains__(self, value: object) -> bool:
        """Whether some item equals `value` (tensors compared by shape and values)."""
        return any(_equal(self[i], value) for i in range(len(self)))

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the cached loader (worker processes started by spawn get a copy)."""
        state = self.__dict__.copy()
        state["_Dataset__loader"] = None
        state["_Dataset__loader_key"] = None
        return state

    @staticmethod
    def unpack_data(data: Any) -> tuple[Any, Any]:
        """Splits a collated batch into `(input, target)`; override for other layouts.

        An `(x, y)` tuple or list gives `(x, y)`; a lone tensor or a dict gives `(data, data)`
        (reconstruction, or packed inputs and targets).

        Raises:
            TypeError: For any other layout, naming its type and length.
        """
        if isinstance(data, (torch.Tensor, Mapping)):
            return data, data
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return data[0], data[1]
        length = f" of length {len(data)}" if isinstance(data, Sequence) else ""
        raise TypeError(
            "A batch must be an (input, target) pair, a tensor or a dict; override `unpack_data` "
            f"for other layouts. Received: data={type(data).__name__}{length}"
        )

    def _check_order_options(self) -> None:
        if self.sampler is not None and self.shuffle:
            raise ValueError(
                "`shuffle` must be False when a `sampler` is given: the sampler decides the order "
                "(a `DistributedSampler(shuffle=True)` shuffles its shard). "
                f"Received: shuffle={self.shuffle}, sampler={type(self.sampler).__name__}"
            )


def _same_key(old: _LoaderKey | None, new: _LoaderKey) -> bool:
    """Loader keys match when the options are equal and sampler and generator are the same objects."""
    return old is not None and old[0] == new[0] and old[1] is new[1] and old[2] is new[2]


def _equal(a: object, b: object) -> bool:
    """Structural equality that is safe on tensors (upstream's `==` raised on them)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)
