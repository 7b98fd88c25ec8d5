"""Sliding windows over a channel-first image of any number of spatial dimensions, and back.

Windows start every `stride` along each spatial dimension; when the last window would not end
on the border, one more window is placed flush with the border, so the windows always cover the
whole image. `reversed_sliding_window` puts windows back, averaging where they overlap.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["reversed_sliding_window", "sliding_window"]

Size = int | Sequence[int]
"""A size per spatial dimension, or one int for all of them."""


def sliding_window(image: torch.Tensor, /, window_size: Size, stride: Size) -> torch.Tensor:
    """Cuts an image of shape `(C, *spatial)` into windows of shape `(C, *window_size)`.

    Args:
        image: Channel-first tensor with at least one spatial dimension.
        window_size: Window size per spatial dimension (or one int for all), each at most the
            image's size there.
        stride: Step between window starts per spatial dimension (or one int), each >= 1.

    Returns:
        Tensor of shape `(num_windows, C, *window_size)`, windows in row-major order of their
        start positions.

    Raises:
        ValueError: When sizes do not match the image's spatial dimensions, a window is larger
            than the image, or a stride is not positive.
    """
    spatial, window, step = _check_sizes(tuple(image.shape[1:]), window_size, stride, image_ndim=image.dim())
    return torch.stack([image[_with_channels(region)] for region in _regions(spatial, window, step)])


def reversed_sliding_window(windows: torch.Tensor, /, image_size: Size, stride: Size) -> torch.Tensor:
    """Rebuilds the image that `sliding_window(image, window_size, stride)` was cut from.

    Every pixel is the mean of the windows covering it, so windows of an unchanged image give the
    image back, and overlapping predictions (e.g. segmentation logits) are averaged.

    Args:
        windows: Tensor of shape `(num_windows, C, *window_size)`.
        image_size: The image's spatial size (without the channel dimension).
        stride: The stride the windows were cut with.

    Returns:
        Tensor of shape `(C, *image_size)`, of the windows' dtype if floating point, else of the
        default float dtype (an average is fractional).

    Raises:
        ValueError: When the sizes are inconsistent, or `num_windows` differs from the number of
            windows that `image_size`, the window size and `stride` give.
    """
    if windows.dim() < 3:
        raise ValueError(
            f"`windows` must have shape (num_windows, C, *window_size) with at least one spatial dimension. "
            f"Received: windows.shape={tuple(windows.shape)}"
        )
    image_dims = _per_dimension("image_size", image_size, windows.dim() - 2)
    spatial, window, step = _check_sizes(image_dims, tuple(windows.shape[2:]), stride, image_ndim=windows.dim() - 1)
    regions = _regions(spatial, window, step)
    if len(regions) != windows.shape[0]:
        raise ValueError(
            f"`windows` must hold the {len(regions)} windows that image_size={spatial}, window_size={window} and "
            f"stride={step} give. Received: num_windows={windows.shape[0]}"
        )
    dtype = windows.dtype if windows.dtype.is_floating_point else torch.get_default_dtype()
    total = windows.new_zeros((windows.shape[1], *spatial), dtype=dtype)
    count = windows.new_zeros(spatial, dtype=dtype)
    for window_values, region in zip(windows, regions):
        total[_with_channels(region)] += window_values
        count[region] += 1
    return total / count


def _check_sizes(
    spatial: tuple[int, ...], window_size: Size, stride: Size, *, image_ndim: int
) -> tuple[tuple[int, ...], ...]:
    """Returns `(spatial, window, stride)` as tuples of equal length, raising on bad values."""
    if not spatial:
        raise ValueError(
            f"`image` must be channel-first with at least one spatial dimension, (C, *spatial). Received: image.dim()={image_ndim}"
        )
    window = _per_dimension("window_size", window_size, len(spatial))
    step = _per_dimension("stride", stride, len(spatial))
    if any(s <= 0 for s in step):
        raise ValueError(f"`stride` must be positive in every dimension. Received: stride={step}")
    if any(not 0 < w <= n for w, n in zip(window, spatial)):
        raise ValueError(
            f"`window_size` must be positive and at most the image size {spatial} in every dimension. "
            f"Received: window_size={window}"
        )
    return spatial, window, step


def _per_dimension(name: str, value: Size, ndim: int) -> tuple[int, ...]:
    """Returns `value` as one int per spatial dimension; an int is repeated."""
    sizes = (value,) * ndim if isinstance(value, int) else tuple(value)
    if len(sizes) != ndim or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise ValueError(
            f"`{name}` must be an int or {ndim} ints, one per spatial dimension. Received: {name}={value!r}"
        )
    return sizes


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one dimension: every `stride`, plus one flush with the end if needed."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _regions(spatial: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The spatial slices of every window, in row-major order of their starts."""
    per_dimension = [_starts(n, w, s) for n, w, s in zip(spatial, window, stride)]
    return [tuple(slice(b, b + w) for b, w in zip(begin, window)) for begin in itertools.product(*per_dimension)]


def _with_channels(region: tuple[slice, ...]) -> tuple[slice, ...]:
    """The index of a spatial region across every channel."""
    return (slice(None), *region)
