"""`batched`: a builder of plain torch datasets becomes a builder of their loaders."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchmanager_data import Dataset, batched


@batched
def load_squares(n: int, *, offset: int = 0) -> TensorDataset:
    """Squares of n numbers."""
    x = torch.arange(offset, offset + n)
    return TensorDataset(x, x**2)


class Doubles(torch.utils.data.Dataset[Any]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, 2 * index


class CountingLoader(DataLoader[Any]):
    """A DataLoader subclass, to check that `loader_type` is used."""


def test_a_plain_torch_dataset_is_batched() -> None:
    # upstream asserted that the built dataset IS a torchmanager Dataset, the inverse of its own
    # message, so every plain torch dataset (the only thing worth batching) was rejected
    loader = load_squares(7, offset=1, batch_size=3, num_workers=0)
    assert isinstance(loader, DataLoader)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [3, 3, 1]
    torch.testing.assert_close(torch.cat([y for _, y in batches]), torch.arange(1, 8) ** 2)
    assert load_squares.__name__ == "load_squares" and load_squares.__doc__ == "Squares of n numbers."


def test_loading_options() -> None:
    dropped = load_squares(7, batch_size=3, drop_last=True, num_workers=0)
    assert len(dropped) == 2 and dropped.pin_memory is False
    torch.manual_seed(0)
    shuffled = [int(v) for x, _ in load_squares(10, batch_size=4, shuffle=True, num_workers=0) for v in x]
    assert sorted(shuffled) == list(range(10)) and shuffled != list(range(10))
    assert load_squares(2, device="cuda", num_workers=0).pin_memory is torch.cuda.is_available()


def test_a_class_and_a_loader_type() -> None:
    make = batched(loader_type=CountingLoader)(Doubles)
    loader = make(5, batch_size=2, num_workers=0)
    assert isinstance(loader, CountingLoader)
    torch.testing.assert_close(torch.cat([y for _, y in loader]), torch.tensor([0, 2, 4, 6, 8]))
    assert isinstance(batched(Doubles, CountingLoader)(3, num_workers=0), CountingLoader)


def test_a_torchmanager_dataset_is_refused() -> None:
    class Own(Dataset[Any]):
        @property
        def unbatched_len(self) -> int:
            return 1

        def __getitem__(self, index: int) -> Any:
            return index

    with pytest.raises(
        TypeError,
        match=r"`batched` wraps functions returning a plain torch dataset, but this one returned a torchmanager `Dataset`, which batches itself: iterate it directly\. Received: dataset=Own",
    ):
        batched(lambda: Own(1, num_workers=0))()


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int\. Received: batch_size=0"):
        load_squares(3, batch_size=0)
    with pytest.raises(
        TypeError,
        match=r"`loader_type` must be a subclass of torch\.utils\.data\.DataLoader\. Received: loader_type=<class 'list'>",
    ):
        batched(Doubles, list)  # type: ignore[call-overload]
    with pytest.raises(
        TypeError, match=r"`batched` wraps a function or class returning a torch dataset\. Received: fn=3"
    ):
        batched(3)  # type: ignore[call-overload]
