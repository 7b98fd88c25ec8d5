"""`Dataset.from_tensor_slices`: tensors in memory as a `Dataset`, checked against torch's own
`TensorDataset` + `DataLoader` (same generator, same batches) and `DistributedSampler`."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from torchmanager_data import Dataset, distribute

N = 23


def rows(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """x row i starts with i (so a batch says which rows it holds), y[i] = 10 * i."""
    x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, 3)], dim=1)
    return x, torch.arange(n) * 10


def assert_same_batches(ours: Any, reference: Any) -> None:
    ours, reference = list(ours), list(reference)
    assert len(ours) == len(reference)
    for (x, y), (x_ref, y_ref) in zip(ours, reference, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize(("batch_size", "drop_last"), [(5, False), (5, True), (23, False), (64, False)])
def test_batches_are_those_of_a_torch_loader_over_a_tensor_dataset(batch_size: int, drop_last: bool) -> None:
    x, y = rows()
    dataset = Dataset.from_tensor_slices((x, y), batch_size, drop_last=drop_last)
    reference = DataLoader(TensorDataset(x, y), batch_size=batch_size, drop_last=drop_last)
    assert len(dataset) == N and dataset.batched_len == len(reference)
    assert_same_batches(dataset, reference)
    assert_same_batches(dataset, reference)  # a second epoch too


def test_shuffled_batches_follow_the_generator_as_torch_s_loader_does() -> None:
    x, y = rows()
    dataset = Dataset.from_tensor_slices((x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))
    reference = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))
    epochs = []
    for _ in range(3):
        ours = list(dataset)
        assert_same_batches(ours, reference)
        ids = [int(i) for batch, _ in ours for i in batch[:, 0]]
        assert sorted(ids) == list(range(N))
        assert all(torch.equal(label, batch[:, 0].long() * 10) for batch, label in ours)  # rows stay paired
        epochs.append(ids)
    assert epochs[0] != list(range(N)) and epochs[1] != epochs[0]  # reshuffled every epoch


def test_a_lone_tensor_a_dict_and_nested_tuples_keep_their_structure() -> None:
    x, y = rows(6)
    (lone, same), *_ = Dataset.from_tensor_slices(x, batch_size=4)
    assert lone is same and torch.equal(lone, x[:4])

    (inputs, targets), _ = Dataset.from_tensor_slices({"image": x, "label": y}, batch_size=4)
    assert inputs is targets and set(inputs) == {"image", "label"}
    assert torch.equal(inputs["image"], x[:4]) and torch.equal(inputs["label"], y[:4])

    ((a, b), label), _ = Dataset.from_tensor_slices(((x, x * 2), {"y": y}), batch_size=4)
    assert torch.equal(a, x[:4]) and torch.equal(b, 2 * x[:4]) and torch.equal(label["y"], y[:4])


def test_numpy_arrays_become_tensors_that_share_their_memory() -> None:
    x, y = np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6)
    dataset = Dataset.from_tensor_slices((x, y), batch_size=3)
    x[0, 0] = -1.0  # no copy was made
    (first, labels), _ = list(dataset)
    assert first.dtype == torch.float32 and float(first[0, 0]) == -1.0
    assert labels.tolist() == [0, 1, 2]


def test_the_defaults_load_in_this_process() -> None:
    dataset = Dataset.from_tensor_slices(rows(), batch_size=8)
    assert dataset.num_workers == 0 and dataset.shuffle is False and dataset.drop_last is False
    assert repr(dataset) == "Dataset.from_tensor_slices(<23 items>, batch_size=8, shuffle=False, drop_last=False)"


def test_worker_processes_load_the_same_batches() -> None:
    x, y = rows()
    dataset = Dataset.from_tensor_slices((x, y), batch_size=5, num_workers=2)
    assert_same_batches(dataset, DataLoader(TensorDataset(x, y), batch_size=5))
    restored = pickle.loads(pickle.dumps(dataset))  # as a spawned worker gets it
    assert_same_batches(restored, DataLoader(TensorDataset(x, y), batch_size=5))


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_those_of_a_distributed_sampler(shuffle: bool) -> None:
    """Each of 3 ranks gets what torch's DistributedSampler gives it over a TensorDataset (pads included)."""
    x, y = rows()
    seen = []
    for rank in range(3):
        shard = distribute(Dataset.from_tensor_slices((x, y), 4, shuffle=shuffle), world_size=3, rank=rank, seed=3)
        sampler = DistributedSampler(TensorDataset(x, y), num_replicas=3, rank=rank, shuffle=shuffle, seed=3)
        for epoch in range(2):
            shard.set_epoch(epoch)
            sampler.set_epoch(epoch)
            assert_same_batches(shard, DataLoader(TensorDataset(x, y), batch_size=4, sampler=sampler))
        seen += [int(i) for batch, _ in shard for i in batch[:, 0]]
    assert set(seen) == set(range(N)) and len(seen) == 24  # 23 rows over 3 ranks: one repeated, as torch pads


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (
            (torch.zeros(4, 2), torch.zeros(5)),
            ValueError,
            r"same first dimension.*Received: first dimensions data\[0\]=4, data\[1\]=5$",
        ),
        (
            {"a": torch.zeros(3), "b": [torch.zeros(3), torch.zeros(2)]},
            ValueError,
            r"Received: first dimensions data\['a'\]=3, data\['b'\]\[0\]=3, data\['b'\]\[1\]=2$",
        ),
        (
            (torch.zeros(3), torch.tensor(1.0)),
            ValueError,
            r"needs a first dimension to slice.*Received: data\[1\] of shape \(\)$",
        ),
        (
            (torch.zeros(3), "labels"),
            TypeError,
            r"must be a tensor or NumPy array of shape \(N, \.\.\.\).*Received: data\[1\]=str$",
        ),
        ([1, 2, 3], TypeError, r"Received: data\[0\]=int$"),
        ((), TypeError, r"Received: data=tuple \(empty\)$"),
        ({"x": torch.zeros(2), "y": {}}, TypeError, r"Received: data\['y'\]=dict \(empty\)$"),
        (None, TypeError, r"Received: data=NoneType$"),
    ],
)
def test_bad_data_is_refused_naming_the_part(data: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Dataset.from_tensor_slices(data, batch_size=2)


@pytest.mark.parametrize("bad", [0, -1])
def test_the_loading_options_are_checked_as_for_any_dataset(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"`batch_size` must be a positive int\. Received: batch_size={bad}"):
        Dataset.from_tensor_slices(rows(), batch_size=bad)
    with pytest.raises(ValueError, match=r"`shuffle` must be False when a `sampler` is given"):
        Dataset.from_tensor_slices(rows(), batch_size=2, shuffle=True, sampler=[0, 1])


@pytest.mark.parametrize("as_array", [False, True])
def test_inputs_and_labels_given_apart_are_told_to_come_as_one_tuple(as_array: bool) -> None:
    """Keras habit: `from_tensor_slices(x, y)` put the labels where the batch size goes (the message named a
    batch size of 64 label values)."""
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    labels: Any = y.numpy() if as_array else y
    with pytest.raises(
        TypeError,
        match=r"^`from_tensor_slices` takes the inputs and labels as one tuple, `from_tensor_slices\(\(x, y\), "
        r"batch_size=32\)`: its second argument is the batch size\. Received: batch_size of shape \(64,\)$",
    ):
        Dataset.from_tensor_slices(x, labels)
