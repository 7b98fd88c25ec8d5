"""An evaluation pass in which every process runs as many forwards, for models that gather parameters in forward.

Who owns what: `evaluation_shards` deals an evaluation data set out in whole batches, each sample once,
so shares differ by a batch (and a share may be empty). A sharded model (FSDP2) gathers its parameters
in each forward, a collective every process must join: `lockstep` makes a process whose share ran out
join the remaining rounds with a stand-in forward on a batch of its own (or, with no batch at all, one
borrowed from another process), whose output the caller discards. Nothing it runs is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import torch

from .. import distributed

__all__ = ["lockstep"]

Batch = TypeVar("Batch")
_END = object()


def lockstep(batches: Iterable[Batch], stand_in: Callable[[Batch], object]) -> Iterator[Batch]:
    """Yield this process's `batches`; then call `stand_in(batch)` once for each round other processes still run.

    Every process calls it at the same point of a pass. A round is one batch on each process that
    still has one; the loop's body for a yielded batch must make no collective other than the
    model's forward (the stand-in makes only that one). With sized `batches` (an evaluation share)
    the rounds are agreed once, at the start; without a length, once per round.

    Args:
        batches: This process's share of the pass (`evaluation_shards.split`).
        stand_in: A forward of the model on a batch, under the pass's grad mode; its result is discarded.
    """
    if not distributed.is_distributed():
        yield from batches
        return
    try:
        size = len(batches)  # type: ignore[arg-type]
    except TypeError:
        yield from _unsized(iter(batches), stand_in)
        return
    yield from _sized(iter(batches), size, stand_in)


def _sized(iterator: Iterator[Batch], size: int, stand_in: Callable[[Batch], object]) -> Iterator[Batch]:
    sizes = distributed.gather_objects(size)
    first: Any = _END
    if size == 0 and max(sizes) > 0:
        first = _borrow(None, sizes.index(max(sizes)))
    elif min(sizes) == 0 and max(sizes) > 0:  # another process borrows: the first process with most batches lends
        first = next(iterator)
        _borrow(first, sizes.index(max(sizes)))
        iterator = _chain(first, iterator)
    for done in range(max(sizes)):
        if done < size:
            batch = next(iterator)
            if first is _END:
                first = batch
            yield batch
        else:
            stand_in(first)


def _unsized(iterator: Iterator[Batch], stand_in: Callable[[Batch], object]) -> Iterator[Batch]:
    first: Any = _END
    while True:
        batch = next(iterator, _END)
        if first is _END and batch is not _END:
            first = batch
        states = distributed.gather_objects((batch is not _END, first is not _END))
        if not any(has for has, _ in states):
            return
        if not all(had for _, had in states):  # a process without any batch yet borrows one for its stand-ins
            lender = next(rank for rank, (has, _) in enumerate(states) if has)
            borrowed = _borrow(batch if distributed.get_rank() == lender else None, lender)
            if first is _END:
                first = borrowed
        if batch is _END:
            stand_in(first)
        else:
            yield batch  # type: ignore[misc]


def _borrow(batch: Any, lender: int) -> Any:
    """The `lender` process's batch on every process (its tensors sent through the host)."""
    return distributed.gather_objects(_on_cpu(batch) if distributed.get_rank() == lender else None)[lender]


def _chain(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    yield first
    yield from rest


def _on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (in tuples, lists and dicts) moved to the host."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, Mapping):
        return type(value)({key: _on_cpu(item) for key, item in value.items()})  # type: ignore[call-arg]
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_on_cpu(item) for item in value)
    return value
