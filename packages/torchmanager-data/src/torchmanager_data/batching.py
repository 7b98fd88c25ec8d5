"""`batched`: turns a function (or class) that builds a plain torch dataset into one that builds
its `DataLoader`, taking the loading options as keyword arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ._options import CPU, check_batch_size, check_num_workers, pin_memory_for, to_device
from .dataset import Dataset

__all__ = ["batched"]

D = TypeVar("D", bound=DataLoader[Any])
DatasetFn = Callable[..., TorchDataset[Any]]


@overload
def batched(fn: DatasetFn, /) -> Callable[..., DataLoader[Any]]: ...
@overload
def batched(fn: DatasetFn, /, loader_type: type[D]) -> Callable[..., D]: ...
@overload
def batched(*, loader_type: type[D]) -> Callable[[DatasetFn], Callable[..., D]]: ...


def batched(fn: DatasetFn | None = None, /, loader_type: type[Any] = DataLoader) -> Any:
    """Wraps a function returning a torch dataset so that it returns a loader over it.

    Use as `@batched` or `@batched(loader_type=MyLoader)` on a function or a dataset class.
    The wrapped function takes the original arguments plus the keyword-only loading options
    `batch_size=1`, `device="cpu"` (pins memory for CUDA), `drop_last=False`,
    `num_workers=None` (usable CPUs less one, at most 8) and `shuffle=False`.

    Args:
        fn: Function or class building a `torch.utils.data.Dataset`.
        loader_type: `DataLoader` subclass to build.

    Returns:
        The wrapped function, or a decorator when `fn` is omitted.

    Raises:
        TypeError: When called, if `fn` returned a torchmanager `Dataset`: it batches itself
            already and must not be batched twice (upstream's check was inverted and rejected
            every plain torch dataset instead).
    """
    if not (isinstance(loader_type, type) and issubclass(loader_type, DataLoader)):
        raise TypeError(
            f"`loader_type` must be a subclass of torch.utils.data.DataLoader. Received: loader_type={loader_type!r}"
        )
    if fn is None:
        return functools.partial(batched, loader_type=loader_type)
    if not callable(fn):
        raise TypeError(f"`batched` wraps a function or class returning a torch dataset. Received: fn={fn!r}")
    dataset_fn = fn

    @functools.wraps(dataset_fn, updated=())  # not the class __dict__ when wrapping a class
    def load(
        *args: Any,
        batch_size: int = 1,
        device: torch.device | str = CPU,
        drop_last: bool = False,
        num_workers: int | None = None,
        shuffle: bool = False,
        **kwargs: Any,
    ) -> Any:
        batch_size = check_batch_size(batch_size)
        workers = check_num_workers(num_workers)
        pin_memory = pin_memory_for(to_device(device))
        dataset = dataset_fn(*args, **kwargs)
        if isinstance(dataset, Dataset):
            raise TypeError(
                "`batched` wraps functions returning a plain torch dataset, but this one returned a "
                "torchmanager `Dataset`, which batches itself: iterate it directly. "
                f"Received: dataset={type(dataset).__name__}"
            )
        return loader_type(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=pin_memory,
        )

    return load
