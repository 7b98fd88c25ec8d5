"""`distribute`: shards a `Dataset` across processes by injecting a `DistributedSampler`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._options import check_world
from .dataset import Dataset

__all__ = ["distribute"]

DS = TypeVar("DS", bound=Dataset[Any])


@overload
def distribute(dataset: DS, /, *, world_size: int, rank: int, seed: int = 0) -> DS: ...
@overload
def distribute(dataset: type[DS], /, *, world_size: int, rank: int, seed: int = 0) -> type[DS]: ...
@overload
def distribute(dataset: Callable[..., DS], /, *, world_size: int, rank: int, seed: int = 0) -> Callable[..., DS]: ...
@overload
def distribute(*, world_size: int, rank: int, seed: int = 0) -> Callable[[Any], Any]: ...


def distribute(dataset: Any = None, /, *, world_size: int, rank: int, seed: int = 0) -> Any:
    """Makes a dataset yield only this process's shard of every epoch (see `Dataset.shard`).

    The dataset gets a `DistributedSampler(num_replicas=world_size, rank=rank)` that takes over
    its `shuffle` (the sampler shuffles with `seed` + the epoch given to `Dataset.set_epoch`) and
    its `drop_last` (drop the tail instead of padding so that every rank has as many items).
    Without `drop_last` the shards are disjoint when the length divides by `world_size`, and
    otherwise padded with a few repeated items; together they cover every item. Upstream's
    `distribute` needed the dataset positionally, so its documented decorator form failed.

    Args:
        dataset: A `Dataset` instance (sharded in place), a `Dataset` class (a subclass whose
            instances are sharded is returned) or a function returning a `Dataset` (wrapped).
            Omit it to use `@distribute(world_size=..., rank=...)` as a decorator.
        world_size: Number of processes, a positive int.
        rank: This process's rank, in `[0, world_size)`.
        seed: Shuffling seed, the same on every rank.

    Raises:
        TypeError/ValueError: On a bad `world_size`/`rank`, a non-`Dataset`, or a dataset that
            already has another sampler (see `Dataset.shard`).
    """
    check_world(world_size, rank)
    if dataset is None:
        return lambda target: distribute(target, world_size=world_size, rank=rank, seed=seed)

    def shard(instance: DS) -> DS:
        if not isinstance(instance, Dataset):
            raise TypeError(
                f"`distribute` shards a torchmanager `Dataset`. Received: dataset={type(instance).__name__}"
            )
        instance.shard(world_size, rank, seed=seed)
        return instance

    if isinstance(dataset, Dataset):
        return shard(dataset)
    if isinstance(dataset, type):
        if not issubclass(dataset, Dataset):
            raise TypeError(f"`distribute` shards a torchmanager `Dataset`. Received: dataset={dataset.__name__}")
        base: type[Any] = dataset

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            base.__init__(self, *args, **kwargs)
            shard(self)

        # same name and module, so that `@distribute(...) class Foo` instances still pickle
        attrs = {
            "__init__": __init__,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
        }
        metaclass: Any = type(base)
        return metaclass(base.__name__, (base,), attrs)
    if callable(dataset):
        make: Callable[..., Dataset[Any]] = dataset

        @functools.wraps(make)
        def make_sharded(*args: Any, **kwargs: Any) -> Dataset[Any]:
            return shard(make(*args, **kwargs))

        return make_sharded
    raise TypeError(
        f"`distribute` takes a Dataset, a Dataset class or a function returning one. Received: dataset={dataset!r}"
    )
