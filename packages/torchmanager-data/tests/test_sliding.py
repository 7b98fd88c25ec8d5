"""Sliding windows and their reverse against hand-made arrays (numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from torchmanager_data import reversed_sliding_window, sliding_window


def test_two_d_windows_by_hand() -> None:
    image = torch.arange(20.0).reshape(1, 4, 5)
    # rows start at 0 and 2; columns at 0 and 2 (2 + 3 reaches the border exactly)
    expected = [
        [[0, 1, 2], [5, 6, 7]],
        [[2, 3, 4], [7, 8, 9]],
        [[10, 11, 12], [15, 16, 17]],
        [[12, 13, 14], [17, 18, 19]],
    ]
    windows = sliding_window(image, (2, 3), (2, 2))
    torch.testing.assert_close(windows, torch.tensor(expected, dtype=torch.float32).unsqueeze(1))


def test_a_last_window_flush_with_the_border() -> None:
    image = torch.arange(5.0).reshape(1, 5)
    # starts 0, 2, then 3 so that the image's last pixel is covered
    windows = sliding_window(image, 2, 2)
    torch.testing.assert_close(windows, torch.tensor([[[0.0, 1]], [[2, 3]], [[3, 4]]]))


def test_channels_are_kept_together() -> None:
    image = torch.stack([torch.arange(9.0).reshape(3, 3), -torch.arange(9.0).reshape(3, 3)])
    windows = sliding_window(image, (2, 2), (1, 1))
    assert windows.shape == (4, 2, 2, 2)
    torch.testing.assert_close(windows[3, 1], -torch.tensor([[4.0, 5], [7, 8]]))


def test_the_upstream_docstring_count() -> None:
    assert sliding_window(torch.zeros(3, 224, 224), (64, 64), (32, 32)).shape == (36, 3, 64, 64)


def numpy_reverse(windows: np.ndarray, image_size: tuple[int, ...], starts: list[list[int]]) -> np.ndarray:
    """Puts windows back by hand: sum of windows over count of windows, pixel by pixel."""
    channels, *window = windows.shape[1:]
    total = np.zeros((channels, *image_size))
    count = np.zeros(image_size)
    for values, begin in zip(windows, itertools.product(*starts)):
        region = tuple(slice(b, b + w) for b, w in zip(begin, window))
        total[(slice(None), *region)] += values
        count[region] += 1
    return total / count


def test_reverse_averages_overlaps_in_two_d() -> None:
    # window k holds the constant k: pixels covered by several windows get their mean
    windows = torch.arange(6.0).reshape(6, 1, 1, 1).expand(6, 1, 2, 2).clone()
    image = reversed_sliding_window(windows, (3, 4), (1, 1))
    expected = [[0, 0.5, 1.5, 2], [1.5, 2, 3, 3.5], [3, 3.5, 4.5, 5]]
    torch.testing.assert_close(image, torch.tensor([expected], dtype=torch.float32))
    torch.testing.assert_close(
        image.numpy(), numpy_reverse(windows.numpy(), (3, 4), [[0, 1], [0, 1, 2]]), check_dtype=False
    )


def test_reverse_averages_overlaps_in_three_d() -> None:
    gen = torch.Generator().manual_seed(0)
    windows = torch.randn(2 * 2 * 3, 2, 3, 2, 2, generator=gen, dtype=torch.float64)
    # depth 4 with window 3 stride 2: starts 0, then 1 flush; height 3 window 2 stride 2: 0, 1; width 5: 0, 2, 3
    image = reversed_sliding_window(windows, (4, 3, 5), (2, 2, 2))
    expected = numpy_reverse(windows.numpy(), (4, 3, 5), [[0, 1], [0, 1], [0, 2, 3]])
    np.testing.assert_allclose(image.numpy(), expected)


@pytest.mark.parametrize(
    ("size", "window", "stride"), [((6, 7), (3, 3), (2, 2)), ((4, 5, 6), (2, 3, 4), (1, 2, 3)), ((8,), (8,), (1,))]
)
def test_windows_of_an_image_give_the_image_back(
    size: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]
) -> None:
    image = torch.randn(3, *size, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(reversed_sliding_window(sliding_window(image, window, stride), size, stride), image)


def test_reverse_of_integer_windows_is_floating() -> None:
    windows = torch.tensor([[[1, 1]], [[2, 2]]])
    image = reversed_sliding_window(windows, 3, 1)
    torch.testing.assert_close(image, torch.tensor([[1.0, 1.5, 2.0]]))


def test_bad_sizes() -> None:
    image = torch.zeros(1, 4, 4)
    with pytest.raises(
        ValueError,
        match=r"`window_size` must be positive and at most the image size \(4, 4\) in every dimension\. Received: window_size=\(5, 2\)",
    ):
        sliding_window(image, (5, 2), 1)
    with pytest.raises(ValueError, match=r"`stride` must be positive in every dimension\. Received: stride=\(0, 1\)"):
        sliding_window(image, 2, (0, 1))
    with pytest.raises(
        ValueError,
        match=r"`window_size` must be an int or 2 ints, one per spatial dimension\. Received: window_size=\(2, 2, 2\)",
    ):
        sliding_window(image, (2, 2, 2), 1)
    with pytest.raises(
        ValueError,
        match=r"`image` must be channel-first with at least one spatial dimension, \(C, \*spatial\)\. Received: image\.dim\(\)=1",
    ):
        sliding_window(torch.zeros(4), 2, 1)


def test_bad_windows() -> None:
    with pytest.raises(
        ValueError,
        match=r"`windows` must hold the 4 windows that image_size=\(3, 3\), window_size=\(2, 2\) and stride=\(1, 1\) give\. Received: num_windows=3",
    ):
        reversed_sliding_window(torch.zeros(3, 1, 2, 2), (3, 3), 1)
    with pytest.raises(
        ValueError,
        match=r"`windows` must have shape \(num_windows, C, \*window_size\) with at least one spatial dimension\. Received: windows\.shape=\(3, 2\)",
    ):
        reversed_sliding_window(torch.zeros(3, 2), 3, 1)
    with pytest.raises(
        ValueError,
        match=r"`image_size` must be an int or 2 ints, one per spatial dimension\. Received: image_size=\(3,\)",
    ):
        reversed_sliding_window(torch.zeros(4, 1, 2, 2), (3,), 1)
