"""The loader processes of a `Dataset`: started once and reused every epoch, and a stuck one ends the pass
with `LoaderTimeoutError` after `timeout` seconds instead of hanging the run.

References: the process ids that loaded each epoch's items (read in the items themselves), and the
wall-clock time of a pass whose loader process never answers.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch.utils.data import get_worker_info

from torchmanager_data import Dataset, LoaderTimeoutError


class Pids(Dataset[torch.Tensor]):
    """Item i: (i, the id of the process that loaded it); item `stuck` never comes."""

    stuck = -1

    @property
    def unbatched_len(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == self.stuck:
            time.sleep(600)
        assert get_worker_info() is not None
        return torch.tensor([index, os.getpid()])


def pids(dataset: Dataset[torch.Tensor]) -> set[int]:
    return {int(pid) for x, _ in dataset for pid in x[:, 1]}


def test_loader_processes_are_started_once_and_serve_every_epoch() -> None:
    dataset = Pids(3, num_workers=2)
    first = pids(dataset)
    assert len(first) == 2 and pids(dataset) == first and pids(dataset) == first
    fresh = Pids(3, num_workers=2, persistent_workers=False)
    assert len(pids(fresh) | pids(fresh)) == 4  # new processes every epoch


def test_every_epoch_takes_the_same_numbers_from_the_generator_with_or_without_living_processes() -> None:
    """A new iterator draws its processes' base seed before the order; reused processes must not shift the orders."""

    def orders(**options: object) -> list[list[int]]:
        dataset = Pids(4, shuffle=True, generator=torch.Generator().manual_seed(3), **options)  # type: ignore[arg-type]
        return [[int(i) for x, _ in dataset for i in x[:, 0]] for _ in range(3)]

    reference_loader = torch.utils.data.DataLoader(
        range(12), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    reference = [[int(i) for batch in reference_loader for i in batch] for _ in range(3)]
    assert orders(num_workers=2) == reference
    assert orders(num_workers=2, persistent_workers=False) == reference


def test_the_loading_options_reach_the_loader() -> None:
    loader = Pids(3, num_workers=2, timeout=7, multiprocessing_context="spawn").loader
    assert loader.persistent_workers and loader.timeout == 7 and loader.multiprocessing_context is not None
    in_process = Pids(3, num_workers=0).loader  # torch takes neither option without loader processes
    assert not in_process.persistent_workers and in_process.timeout == 0


def test_a_stuck_loader_process_ends_the_pass_with_a_clear_error() -> None:
    dataset = Pids(3, num_workers=1, timeout=1)
    dataset.stuck = 4
    started = time.monotonic()
    with pytest.raises(
        LoaderTimeoutError,
        match=r"more than 1.0 s to come from the 1 loader process\(es\): one is stuck.*"
        r"Received: timeout=1.0, num_workers=1",
    ):
        list(dataset)
    assert time.monotonic() - started < 30
