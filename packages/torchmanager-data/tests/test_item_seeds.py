"""Per-item randomness: an item's random draws (torch, Python `random`, NumPy) depend on (seed, epoch, index) only.

References: the same data set loaded in one process (no worker), whose draws are then compared
with those made by 1 and 3 loader processes, by processes that live across epochs, and through a
plain `DataLoader` over `SeededItems`; the hash of `item_seed` seeds fresh generators by hand.
"""

from __future__ import annotations

import random

import numpy
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from torchmanager_data import Dataset, SeededItems
from torchmanager_data.item_seeds import item_seed

N = 24


def draws(index: int) -> torch.Tensor:
    """What an augmentation would draw: torch, Python and NumPy numbers, and the index."""
    return torch.tensor(
        [index, torch.rand(()).item(), random.random(), float(numpy.random.rand())], dtype=torch.float64
    )


class Augmented(Dataset[torch.Tensor]):
    @property
    def unbatched_len(self) -> int:
        return N

    def __getitem__(self, index: int) -> torch.Tensor:
        return draws(index)


class Plain(TorchDataset[torch.Tensor]):
    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> torch.Tensor:
        return draws(index)


def by_index(batches: list[torch.Tensor]) -> dict[int, list[float]]:
    """Each item's draws, keyed by its index."""
    rows = torch.cat(batches)
    assert len(rows) == N
    return {int(row[0]): row[1:].tolist() for row in rows}


def epoch_items(dataset: Dataset[torch.Tensor]) -> dict[int, list[float]]:
    return by_index([x for x, _ in dataset])


def test_item_seed_is_a_hash_of_seed_epoch_and_index() -> None:
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(10)}
    assert len(seeds) == 90 and all(0 <= seed < 2**64 for seed in seeds)
    assert item_seed(1, 2, 3) == item_seed(1, 2, torch.tensor(3))  # an index tensor is its int
    assert item_seed(-1, 0, 0) == item_seed(2**64 - 1, 0, 0)  # seeds are taken modulo 2**64


def test_an_item_draws_from_generators_seeded_with_its_own_seed() -> None:
    dataset = Augmented(4, shuffle=True, num_workers=0, seed=11)
    dataset.set_epoch(3)
    items = epoch_items(dataset)
    for index in (0, 7, 23):
        seed = item_seed(11, 3, index)
        expected_torch = torch.rand((), generator=torch.Generator().manual_seed(seed)).item()
        expected_python = random.Random(seed).random()
        expected_numpy = numpy.random.RandomState(seed & 0xFFFFFFFF).rand()
        assert items[index] == [expected_torch, expected_python, expected_numpy]


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("shuffle", [False, True])
def test_items_are_the_same_with_0_1_and_3_loader_processes(shuffle: bool) -> None:
    per_workers = {}
    for workers in (0, 1, 3):
        dataset = Augmented(5, shuffle=shuffle, num_workers=workers, seed=3)
        per_workers[workers] = [epoch_items(dataset) for _ in range(2)]  # two passes: epochs 0 and 1
    assert per_workers[1] == per_workers[0] and per_workers[3] == per_workers[0]
    first, second = per_workers[0]
    assert all(first[i] != second[i] for i in range(N))  # another epoch draws other numbers
    # without per-item seeds, a worker's draws depend on the items it loaded before: not the same
    plain = [by_index(list(DataLoader(Plain(), batch_size=5, num_workers=w))) for w in (1, 3)]
    assert plain[0] != plain[1]


def test_loader_processes_that_live_across_epochs_see_the_epoch() -> None:
    living = Augmented(6, num_workers=2, seed=5, persistent_workers=True)
    passes = []
    for epoch in (0, 1, 4):
        living.set_epoch(epoch)
        passes.append(epoch_items(living))
    for epoch, items in zip((0, 1, 4), passes):
        fresh = Augmented(6, num_workers=0, seed=5)
        fresh.set_epoch(epoch)
        assert epoch_items(fresh) == items


def test_a_pass_without_set_epoch_draws_the_next_epoch() -> None:
    dataset = Augmented(6, num_workers=0, seed=2)
    passes = [epoch_items(dataset) for _ in range(3)]
    for epoch, items in enumerate(passes):
        reference = Augmented(6, num_workers=0, seed=2)
        reference.set_epoch(epoch)
        assert epoch_items(reference) == items


def test_the_seed_defaults_to_torch_s_initial_seed_or_the_generator_s() -> None:
    torch.manual_seed(21)
    implicit = epoch_items(Augmented(6, num_workers=0))
    assert implicit == epoch_items(Augmented(6, num_workers=0, seed=21))
    with_generator = epoch_items(Augmented(6, num_workers=0, generator=torch.Generator().manual_seed(8)))
    assert with_generator == epoch_items(Augmented(6, num_workers=0, seed=8))


def test_loading_items_leaves_the_main_process_generators_as_a_plain_loader_does() -> None:
    torch.manual_seed(0)
    random.seed(0)
    numpy.random.seed(0)
    epoch_items(Augmented(6, num_workers=0, seed=1))
    after_ours = (torch.rand(3), random.random(), numpy.random.rand())

    torch.manual_seed(0)
    random.seed(0)
    numpy.random.seed(0)
    list(DataLoader(list(range(N)), batch_size=6))  # draws its base seed, and nothing for the items
    after_plain = (torch.rand(3), random.random(), numpy.random.rand())
    assert torch.equal(after_ours[0], after_plain[0]) and after_ours[1:] == after_plain[1:]


def test_a_plain_loader_over_seeded_items_draws_what_the_dataset_draws() -> None:
    reference = epoch_items(Augmented(6, shuffle=True, num_workers=0, seed=9))
    for workers in (0, 2):
        loader = DataLoader(SeededItems(Plain(), seed=9), batch_size=6, shuffle=True, num_workers=workers)
        loader.dataset.set_epoch(0)  # type: ignore[attr-defined]
        assert by_index(list(loader)) == reference
    loader = DataLoader(SeededItems(Plain(), seed=9), batch_size=6, num_workers=2, persistent_workers=True)
    loader.dataset.set_epoch(1)  # type: ignore[attr-defined]
    list(loader)
    loader.dataset.set_epoch(0)  # type: ignore[attr-defined]
    assert by_index(list(loader)) == reference  # the living processes drew epoch 0 again


def test_data_without_randomness_skips_the_seeding() -> None:
    slices = Dataset.from_tensor_slices(torch.arange(N), batch_size=4)
    assert slices.loader.dataset is slices  # no wrapper, no cost per item
    assert isinstance(Augmented(4, num_workers=0).loader.dataset, SeededItems)


def test_bad_seed_and_timeout_are_refused() -> None:
    with pytest.raises(TypeError, match=r"`seed` must be an int or None. Received: seed='1'"):
        Augmented(4, seed="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`timeout` must be a number of seconds > 0 .* Received: timeout=0"):
        Augmented(4, timeout=0)
