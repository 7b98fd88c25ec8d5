"""How an element-wise loss becomes one value: the `Reduction` enum and `reduce_loss`."""

from __future__ import annotations

from enum import Enum

import torch

__all__ = ["Reduction", "reduce_loss", "replace_nan", "to_reduction"]


class Reduction(Enum):
    """How element-wise losses are reduced (upstream's enum; values are torch's reduction strings)."""

    NONE = "none"
    MEAN = "mean"
    SUM = "sum"


def to_reduction(value: Reduction | str) -> Reduction:
    """Read a `Reduction` or one of the strings "none", "mean", "sum".

    Raises:
        ValueError: `value` names no reduction.
    """
    if isinstance(value, Reduction):
        return value
    try:
        return Reduction(value)
    except ValueError:
        allowed = [member.value for member in Reduction]
        raise ValueError(
            f"`reduction` must be a Reduction or one of {allowed}. Received: reduction={value!r}"
        ) from None


def reduce_loss(loss: torch.Tensor, reduction: Reduction | str = Reduction.MEAN) -> torch.Tensor:
    """Reduce element-wise losses by their mean, their sum, or not at all."""
    reduction = to_reduction(reduction)
    if reduction is Reduction.MEAN:
        return loss.mean()
    if reduction is Reduction.SUM:
        return loss.sum()
    return loss


def replace_nan(loss: torch.Tensor) -> torch.Tensor:
    """Upstream's `replace_nan`: NaN becomes 0, +inf the dtype's max, -inf becomes -1."""
    return loss.nan_to_num(0.0, posinf=torch.finfo(loss.dtype).max, neginf=-1.0)
