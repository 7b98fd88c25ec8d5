"""One pass over a data source as every loop runs it: the batches on the device, the last one known.

Who owns what: this module turns a data source (a torchmanager `Dataset`, a `DataLoader`, a list
of batches, any iterable) into the `(x, y)` batches of one pass. It tells the sampler the epoch,
skips the batches a resumed run already did, and looks one batch ahead so the loop knows the last
batch when it meets it (as prefetching data fetchers do), even when the source has no length.
The loops (training, validation, test) decide what to do with each batch; `fit` decides the
random states around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

import torch

from .devices import move_to_device

__all__ = ["DataSource", "batches_in", "data_pass", "set_epoch"]

DataSource: TypeAlias = Iterable[Any]
"""Anything iterable yielding `(x, y)` batches: a torchmanager `Dataset`, a `DataLoader`, a list."""

_END = object()


def batches_in(dataset: DataSource) -> int | None:
    """The number of batches a pass over `dataset` yields, when it is known without iterating."""
    batched_len = getattr(dataset, "batched_len", None)
    if isinstance(batched_len, int):
        return batched_len
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def set_epoch(dataset: DataSource, epoch: int) -> None:
    """Tell the data (or its sampler) the epoch, so a `DistributedSampler` reshuffles each epoch."""
    set_epoch = getattr(dataset, "set_epoch", None) or getattr(getattr(dataset, "sampler", None), "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def data_pass(
    dataset: DataSource,
    unpack: Callable[[Any], tuple[Any, Any]],
    device: torch.device,
    *,
    skip: int = 0,
    after_skip: Callable[[], None] | None = None,
) -> Iterator[tuple[Any, Any, bool]]:
    """Yield `(x, y, is_last)` for each batch of `dataset`, moved to `device` (non-blocking).

    The next batch is fetched before a batch is yielded, so `is_last` is exact for any source.

    Args:
        dataset: The data source.
        unpack: Splits a raw batch into `(x, y)`.
        device: Where the batches go.
        skip: Batches to draw and drop first (those a resumed run already trained on).
        after_skip: Called once the skipped batches and the first batch to yield were drawn (a
            resume puts the random generators back as they were when its checkpoint was written).
    """
    iterator = iter(dataset)
    for _ in range(skip):
        if next(iterator, _END) is _END:
            break
    pending = next(iterator, _END)
    if after_skip is not None:
        after_skip()
    while pending is not _END:
        following = next(iterator, _END)
        x, y = unpack(pending)
        yield move_to_device(x, device), move_to_device(y, device), following is _END
        pending = following
