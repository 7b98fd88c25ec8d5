"""Element-wise losses reduced to a scalar: `MSE`, `MAE`, and `Identity` (the output is the loss)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torchmanager_metrics.metric import at_least_float32, overrides

from .loss import Loss, averaged_elements
from .reduction import Reduction, reduce_loss, replace_nan, to_reduction

__all__ = ["MAE", "MSE", "Identity"]


class _ElementwiseLoss(Loss):
    """A loss computed per element, optionally cleaned of NaN/inf, then reduced.

    Args:
        reduction: How the element-wise losses are reduced; `Reduction.NONE` is only useful
            when calling `forward` directly, since a call must return a scalar.
        replace_nan: Replace NaN by 0, +inf by the dtype's max and -inf by -1 before reducing.
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the loss.
    """

    def __init__(
        self,
        *,
        reduction: Reduction | str = Reduction.MEAN,
        replace_nan: bool = False,
        target: str | None = None,
        weight: float = 1,
    ) -> None:
        super().__init__(target=target, weight=weight)
        self.reduction = to_reduction(reduction)
        self.replace_nan = replace_nan
        self._plain = not overrides(self, _ElementwiseLoss, "forward")  # else the subclass's forward is the value

    def denominator(self, input: Any, target: Any) -> int:
        """The elements averaged with `Reduction.MEAN`, else the samples."""
        return averaged_elements(input, target, self._plain and self.reduction is Reduction.MEAN)

    def elementwise(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unreduced loss of each element."""
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reduced loss; `input` and `target` must have one shape. Computed in float32 or wider.

        Raises:
            ValueError: The shapes differ (torch would broadcast them, e.g. (N, 1) against (N,)
                into (N, N), and return a wrong value with only a warning).
        """
        if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and input.shape != target.shape:
            raise ValueError(
                f"{type(self).__name__} compares `input` and `target` element by element: they must have the same "
                f"shape. Received: input shape={tuple(input.shape)}, target shape={tuple(target.shape)}"
            )
        loss = self.elementwise(at_least_float32(input), at_least_float32(target))
        if self.replace_nan:
            loss = replace_nan(loss)
        return reduce_loss(loss, self.reduction)


class MSE(_ElementwiseLoss):
    """Mean squared error, `(input - target) ** 2` reduced (see `_ElementwiseLoss` for the args)."""

    def elementwise(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(input, target, reduction="none")


class MAE(_ElementwiseLoss):
    """Mean absolute error, `|input - target|` reduced (see `_ElementwiseLoss` for the args)."""

    def elementwise(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(input, target, reduction="none")


class Identity(Loss):
    """The model's output is the loss: returns `input` (a scalar) and ignores the label.

    Args:
        loss_fn: Unused; kept for upstream's signature.
        target: Optional key picking the loss out of a dict of model outputs.
        weight: Finite, non-negative coefficient applied to the loss.
    """

    def __init__(self, loss_fn: None = None, *, target: str | None = None, weight: float = 1) -> None:
        super().__init__(target=target, weight=weight)
        self.reduction, self.replace_nan = Reduction.NONE, False  # upstream 1.5's attributes (the input is the loss)

    def forward(self, input: torch.Tensor, target: Any = None) -> torch.Tensor:
        return input
