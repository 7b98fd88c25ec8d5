"""Dice losses: `Dice` (soft Dice over all classes and elements) and `DiceCE` (Dice plus cross entropy)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torchmanager_metrics.metric import at_least_float32

from .cross_entropy import class_labels
from .loss import Loss, check_non_negative

__all__ = ["Dice", "DiceCE", "dice_ce_loss", "dice_loss", "one_hot_like"]


def one_hot_like(input: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    """The label as a float tensor of `input`'s shape, classes along `dim`.

    Integer class indices (shape of `input` without `dim`) are one-hot encoded along `dim`
    (upstream encoded along the last axis, which mismatched the classes of (N, C, H, W) inputs);
    a label of `input`'s shape (probabilities, or binary masks for one channel) is used as is;
    with one channel, a label without the channel axis is given one.

    Raises:
        ValueError: The label's shape fits none of these.
    """
    if target.shape == input.shape:
        return target.to(input.dtype)
    without_dim = input.shape[:dim] + input.shape[dim + 1 :]
    if target.shape != without_dim:
        raise ValueError(
            f"Dice labels must be class indices of shape {tuple(without_dim)} (the input's shape without `dim`) "
            f"or a tensor of the input's shape {tuple(input.shape)}. Received: target shape={tuple(target.shape)}"
        )
    if input.shape[dim] == 1:
        return target.unsqueeze(dim).to(input.dtype)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"Dice class indices must be an integer tensor. Received: target dtype={target.dtype}")
    return F.one_hot(target.long(), input.shape[dim]).movedim(-1, dim).to(input.dtype)


def dice_loss(
    input: torch.Tensor, target: torch.Tensor, dim: int = 1, smooth: float = 1e-6, *, softmax_input: bool = True
) -> torch.Tensor:
    """Soft Dice loss, `1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`.

    Sums run over every element and class of the batch at once (upstream's reduction), `p`
    being the softmax of `input` over `dim` (or its sigmoid with `softmax_input=False`) and `t`
    the one-hot label (see `one_hot_like`), in float32 or wider (bfloat16/float16 are widened).

    Args:
        input: Logits with classes along `dim`.
        target: Integer class indices, or a tensor of `input`'s shape.
        dim: The class dimension (negative counts from the end).
        smooth: Non-negative constant avoiding 0 / 0.
        softmax_input: Softmax over `dim` if True (exclusive classes), else a sigmoid per element.

    Raises:
        ValueError: `dim` is out of range, or a softmax over a single channel was asked for.
    """
    if not -input.dim() <= dim < input.dim():
        raise ValueError(
            f"`dim` must index a dimension of the input, of shape {tuple(input.shape)}. Received: dim={dim}"
        )
    dim %= input.dim()
    if softmax_input and input.shape[dim] == 1:
        raise ValueError(
            "A softmax over a single channel is always 1: use `softmax_input=False` (sigmoid) for binary Dice. "
            f"Received: softmax_input=True, input shape={tuple(input.shape)}, dim={dim}"
        )
    input = at_least_float32(input)
    probs = input.softmax(dim) if softmax_input else input.sigmoid()
    truth = one_hot_like(probs, target, dim)
    intersection = (probs * truth).sum()
    return 1 - (2 * intersection + smooth) / (probs.sum() + truth.sum() + smooth)


def dice_ce_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    ce_lambda: float = 1.0,
    dice_lambda: float = 1.0,
    smooth: float = 1.0,
    **ce_kwargs: Any,
) -> torch.Tensor:
    """`ce_lambda * cross_entropy + dice_lambda * dice_loss`, classes along dim 1.

    `ce_kwargs` go to `torch.nn.functional.cross_entropy` (`weight`, `ignore_index`, ...). Computed
    in float32 or wider.
    """
    input = at_least_float32(input)
    ce = F.cross_entropy(input, class_labels(input, target), **ce_kwargs)
    return ce_lambda * ce + dice_lambda * dice_loss(input, target, 1, smooth)


class Dice(Loss):
    """Soft Dice loss over all classes and elements of the batch (see `dice_loss`).

    Args:
        dim: The class dimension of the logits.
        smooth: Non-negative constant avoiding 0 / 0.
        softmax_input: Softmax over `dim` if True, else a sigmoid per element.
        **kwargs: `target` and `weight` of `Loss`.
    """

    def __init__(self, dim: int = 1, smooth: float = 1e-6, *, softmax_input: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.smooth = smooth
        self.softmax_input = softmax_input

    @property
    def dim(self) -> int:
        """The class dimension of the logits."""
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`dim` must be an int (the class dimension). Received: dim={value!r}")
        self._dim = value

    @property
    def smooth(self) -> float:
        """The non-negative constant avoiding 0 / 0."""
        return self._smooth

    @smooth.setter
    def smooth(self, value: float) -> None:
        self._smooth = check_non_negative("smooth", value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(input, target, self._dim, self._smooth, softmax_input=self.softmax_input)


class DiceCE(Dice):
    """`ce_lambda * CrossEntropy + dice_lambda * Dice`, classes along dim 1 (see `dice_ce_loss`).

    Args:
        *args: Positional arguments of `torch.nn.CrossEntropyLoss` (class weights, ...).
        ce_lambda: Non-negative coefficient of the cross entropy.
        dice_lambda: Non-negative coefficient of the Dice loss.
        smooth: Non-negative Dice smoothing constant (upstream's default 1).
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the total.
        **kwargs: Keyword arguments of `torch.nn.CrossEntropyLoss`.
    """

    def __init__(
        self,
        *args: Any,
        ce_lambda: float = 1,
        dice_lambda: float = 1,
        smooth: float = 1,
        target: str | None = None,
        weight: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(dim=1, smooth=smooth, softmax_input=True, target=target, weight=weight)
        self.cross_entropy = torch.nn.CrossEntropyLoss(*args, **kwargs)
        self.ce_lambda = ce_lambda
        self.dice_lambda = dice_lambda

    @property
    def ce_lambda(self) -> float:
        """The coefficient of the cross entropy."""
        return self._ce_lambda

    @ce_lambda.setter
    def ce_lambda(self, value: float) -> None:
        self._ce_lambda = check_non_negative("ce_lambda", value)

    @property
    def dice_lambda(self) -> float:
        """The coefficient of the Dice loss."""
        return self._dice_lambda

    @dice_lambda.setter
    def dice_lambda(self, value: float) -> None:
        self._dice_lambda = check_non_negative("dice_lambda", value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = self.cross_entropy
        return dice_ce_loss(
            input,
            target,
            ce_lambda=self._ce_lambda,
            dice_lambda=self._dice_lambda,
            smooth=self._smooth,
            weight=ce.weight,
            ignore_index=ce.ignore_index,
            reduction=ce.reduction,
            label_smoothing=ce.label_smoothing,
        )
