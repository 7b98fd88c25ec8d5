"""Per-item randomness: each item's random draws come from a seed made of (seed, epoch, index).

Who owns what: `ItemSeeds` holds the seed and the epoch in shared memory (so loader processes that
live across epochs see a new epoch) and seeds the global generators (torch on the CPU, Python
`random`, NumPy when it is imported) around one item; `SeededItems` wraps a map-style data set so
that every item a `DataLoader` loads is drawn that way. `Dataset` builds its loader over one.

Why: a loader's worker processes each seed the global generators once, and a worker's draws then
depend on which items it loaded before. With a seed per item, an item's augmentation is the same
whatever the number of workers or processes, and after a resume at any position.
"""

from __future__ import annotations

import hashlib
import operator
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import get_worker_info

__all__ = ["ItemSeeds", "SeededItems", "item_seed"]

T = TypeVar("T")

_MASK64 = (1 << 64) - 1


def item_seed(seed: int, epoch: int, index: object) -> int:
    """The 64-bit seed of the item at `index` in `epoch` (an int index, or any index by its `repr`).

    A hash of the three values: nearby seeds, epochs or indices give unrelated streams.
    """
    try:
        key = b"%d" % operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        key = repr(index).encode()
    digest = hashlib.blake2b(b"%d,%d," % (seed & _MASK64, epoch) + key, digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ItemSeeds:
    """The seed and epoch of per-item randomness, shared with loader processes.

    Args:
        seed: The item seed; None takes one now: `generator.initial_seed()` when `generator` is
            given, else `torch.initial_seed()` (what `torch.manual_seed` set). So a script that seeds
            torch before making its data draws the same items in every run, resumed or not.
        generator: The data's own generator, whose initial seed stands for `seed`.

    Raises:
        TypeError: `seed` is not an int or None.
    """

    def __init__(self, seed: int | None = None, *, generator: torch.Generator | None = None) -> None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"`seed` must be an int or None. Received: seed={seed!r}")
        if seed is None:
            seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        self.seed = seed & _MASK64
        self._shared = torch.zeros((), dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]  # the epoch
        self._epoch_given = True  # the first pass is epoch 0

    @property
    def epoch(self) -> int:
        """The epoch whose items are drawn now."""
        return int(self._shared)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items as those of `epoch` (loader processes alive across epochs see it too)."""
        self._epoch_given = True
        self._shared.fill_(epoch)

    def start_pass(self) -> None:
        """A pass begins: without a `set_epoch` since the last one, the next epoch's items are drawn."""
        if not self._epoch_given:
            self._shared.add_(1)
        self._epoch_given = False

    @contextmanager
    def drawing(self, index: object) -> Iterator[None]:
        """In the body, torch's CPU generator, Python `random` and NumPy's global generator draw from
        the item's own seed.

        In the main process their previous states are back afterwards (training draws from them). A
        loader process keeps drawing from the item's streams (its `collate_fn` then draws the same
        numbers for a batch whichever process loads it), which saves restoring three states an item.
        """
        seed = item_seed(self.seed, int(self._shared), index)
        if get_worker_info() is not None:
            _seed_all(seed)
            yield
            return
        torch_state = torch.get_rng_state()
        python_state = random.getstate()
        numpy: Any = sys.modules.get("numpy")
        swaps = _swaps_numpy(numpy)
        numpy_state = None if numpy is None else numpy.random.get_bit_generator() if swaps else numpy.random.get_state()
        _seed_all(seed, numpy_apart=swaps)
        try:
            yield
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)
            if swaps:
                numpy.random.set_bit_generator(numpy_state)
            elif numpy is not None:
                numpy.random.set_state(numpy_state)


class SeededItems(TorchDataset[T]):
    """A map-style data set whose items draw their randomness from (seed, epoch, index).

    Wrap a plain torch data set with it to get per-item randomness in a `DataLoader`, and call
    `set_epoch(epoch)` before each epoch (the torchmanager loop does it for you):
    `DataLoader(SeededItems(dataset, seed=0), batch_size=32, shuffle=True, num_workers=4)`.
    Items read through `__getitems__` are read one by one instead, each with its own seed.

    Args:
        dataset: The map-style data set (`__getitem__` and `__len__`).
        seed: As for `ItemSeeds`.
        generator: As for `ItemSeeds`.
    """

    def __init__(
        self, dataset: TorchDataset[T], seed: int | None = None, *, generator: torch.Generator | None = None
    ) -> None:
        self.dataset = dataset
        self.seeds = ItemSeeds(seed, generator=generator)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items as those of `epoch`."""
        self.seeds.set_epoch(epoch)

    def __getitem__(self, index: int) -> T:
        with self.seeds.drawing(index):
            return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def _swaps_numpy(numpy: Any) -> bool:
    """Whether NumPy is imported and can swap its global generator (1.25 and later: far cheaper than its state)."""
    return numpy is not None and hasattr(numpy.random, "set_bit_generator")


def _seed_all(seed: int, *, numpy_apart: bool = False) -> None:
    """Seed torch's CPU generator, Python `random` and NumPy's global generator (when imported) with `seed`.

    With `numpy_apart`, NumPy draws from a generator of its own, seeded as `numpy.random.seed` seeds,
    that replaces the global one until the caller puts that back.
    """
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return
    legacy_seed = seed & 0xFFFFFFFF  # `numpy.random.seed` takes 32 bits
    if not numpy_apart:
        numpy.random.seed(legacy_seed)
        return
    if not _numpy_items:
        _numpy_items.append(numpy.random.RandomState())
    _numpy_items[0].seed(legacy_seed)
    numpy.random.set_bit_generator(_numpy_items[0]._bit_generator)


_numpy_items: list[Any] = []
"""The `RandomState` whose generator items of the main process draw from (made once)."""
