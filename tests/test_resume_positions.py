"""A torchmanager `Dataset` with random augmentation resumed mid-epoch at the index level, and through `fit`.

References: the same data set iterated without interruption in one process (its batches, the next
epoch's, the generators after); through `fit`, the run that was never interrupted (bit-identical
weights) and the indices the data set loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import torchmanager
from torchmanager.callbacks import Callback
from torchmanager.data import Dataset
from torchmanager_core.data_position import resume_iterator, samples_done, set_epoch

N = 30
BATCH = 4


class Augmented(Dataset[Any]):
    """Item i: features computed from i plus noise drawn in `__getitem__` (an augmentation), label i % 3.

    Records the indices it loaded in this process (with `num_workers=0`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded: list[int] = []

    @property
    def unbatched_len(self) -> int:
        return N

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.loaded.append(index)
        x = torch.tensor([index / N, (index % 5) / 5.0, 1.0]) + 0.1 * torch.randn(3)
        return x, torch.tensor(index % 3)


def make(workers: int, drop_last: bool = False) -> Augmented:
    return Augmented(
        BATCH, shuffle=True, drop_last=drop_last, num_workers=workers, generator=torch.Generator().manual_seed(4)
    )


def assert_batches_equal(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(("workers", "drop_last"), [(0, False), (2, False), (2, True)])
def test_an_index_level_resume_of_an_augmented_dataset_is_the_tail_of_an_uninterrupted_epoch(
    workers: int, drop_last: bool
) -> None:
    torch.manual_seed(0)
    reference = make(workers, drop_last)
    epochs, starts = [], []
    for epoch in range(3):
        starts.append((torch.get_rng_state(), reference.generator.get_state()))  # type: ignore[union-attr]
        set_epoch(reference, epoch)
        epochs.append(list(reference))

    for resume_at in (1, len(epochs[1]) - 1):
        resumed = make(workers, drop_last)  # a new process: the generators as they were when epoch 1 began
        torch.set_rng_state(starts[1][0])
        resumed.generator.set_state(starts[1][1])  # type: ignore[union-attr]
        set_epoch(resumed, 1)
        position = samples_done(resumed, resume_at)
        assert position == resume_at * BATCH
        rest = resume_iterator(resumed, position)
        assert rest is not None
        assert_batches_equal(list(rest), epochs[1][resume_at:])
        set_epoch(resumed, 2)
        assert_batches_equal(list(resumed), epochs[2])  # the next epoch's order and augmentations too
        if workers == 0:  # items load in this process: none of the batches before the position
            assert len(resumed.loaded) == sum(len(y) for _, y in epochs[1][resume_at:] + epochs[2])


class SaveAt(Callback):
    def __init__(self, path: Path, epoch: int, batch: int) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if self.manager.current_epoch == self.epoch and batch == self.batch:
            self.manager.save_checkpoint(self.path)


def manager(seed: int) -> torchmanager.Manager:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    return torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )


def fit_and_resume(tmp_path: Path, workers: int) -> tuple[torchmanager.Manager, torchmanager.Manager, Augmented]:
    """An uninterrupted 2-epoch fit saving after batch 5 of epoch 2, and a new run resumed from that checkpoint."""
    path = tmp_path / "mid.model"
    reference = manager(0)
    reference.fit(make(workers), epochs=2, callbacks_list=[SaveAt(path, 1, 4)])
    resumed = manager(1)
    torch.manual_seed(99)  # other global draws: everything must come from the checkpoint
    data = make(workers)
    data.generator.manual_seed(1234)  # type: ignore[union-attr]
    resumed.fit(data, epochs=2, resume_from=path)
    return reference, resumed, data


@pytest.mark.parametrize("workers", [0, 2])
def test_a_fit_resumed_mid_epoch_with_augmentation_ends_bit_identical(tmp_path: Path, workers: int) -> None:
    reference, resumed, _ = fit_and_resume(tmp_path, workers)
    for a, b in zip(reference.raw_model.parameters(), resumed.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_fit_resumed_mid_epoch_loads_no_item_before_the_position(tmp_path: Path) -> None:
    _, _, data = fit_and_resume(tmp_path, 0)
    assert len(data.loaded) == N - 5 * BATCH  # the rest of epoch 2 only: batches 1 to 5 were not loaded again
