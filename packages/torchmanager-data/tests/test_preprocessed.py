"""`PreprocessedDataset`: transforms in order; a failing one is named in a `TransformError`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch

from torchmanager_data import PreprocessedDataset, TransformError


def to_tensor(value: int) -> torch.Tensor:
    return torch.tensor(float(value))


def fail_on_three(value: torch.Tensor) -> torch.Tensor:
    if value.item() == 3.0:
        raise ValueError("three is not allowed")
    return value


class Scale:
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.factor


class Raw(PreprocessedDataset[Any]):
    def __init__(self, transforms: list[Callable[[Any], Any]], n: int = 6, **kwargs: Any) -> None:
        kwargs.setdefault("num_workers", 0)
        super().__init__(2, **kwargs)
        self._transforms = transforms
        self.n = n

    @property
    def unbatched_len(self) -> int:
        return self.n

    @property
    def transforms(self) -> Iterable[Callable[[Any], Any]]:
        return self._transforms

    def load(self, index: int) -> Any:
        return index


def test_transforms_run_in_order() -> None:
    dataset = Raw([to_tensor, Scale(10), lambda v: v + 1])
    assert dataset[2].item() == 21.0
    batches = [x for x, _ in dataset]
    torch.testing.assert_close(torch.cat(batches), torch.tensor([1.0, 11, 21, 31, 41, 51]))


def test_a_failing_transform_is_named() -> None:
    dataset = Raw([to_tensor, fail_on_three])
    assert dataset[2].item() == 2.0
    with pytest.raises(TransformError) as info:
        dataset[3]
    error = info.value
    assert str(error) == "Transform #1 `fail_on_three` failed on the item at index 3: ValueError: three is not allowed"
    assert (error.index, error.position, error.transform) == (3, 1, fail_on_three)
    assert isinstance(error.__cause__, ValueError)
    assert isinstance(error, RuntimeError)  # upstream's base class


def test_a_failing_callable_object_is_named_by_its_class() -> None:
    class Broken:
        def __call__(self, value: Any) -> Any:
            raise KeyError("label")

    with pytest.raises(
        TransformError, match=r"^Transform #0 `Broken` failed on the item at index 0: KeyError: 'label'$"
    ):
        Raw([Broken()])[0]
    with pytest.raises(TransformError, match=r"^Transform #1 `Scale` failed on the item at index 1: TypeError"):
        Raw([str, Scale(2.0)])[1]


def test_a_failing_transform_stops_iteration_with_the_error() -> None:
    with pytest.raises(TransformError, match=r"Transform #1 `fail_on_three` failed on the item at index 3"):
        list(Raw([to_tensor, fail_on_three]))


def test_a_failure_in_a_worker_process_is_still_a_transform_error() -> None:
    with pytest.raises(
        TransformError,
        match=r"(?s)Caught TransformError in DataLoader worker process.*Transform #1 `fail_on_three` failed on the item at index 3",
    ):
        list(Raw([to_tensor, fail_on_three], num_workers=1))
