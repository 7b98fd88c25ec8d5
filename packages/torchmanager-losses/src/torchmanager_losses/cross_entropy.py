"""The cross-entropy family: `CrossEntropy`, `FocalCrossEntropy` and `BCEWithLogits`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F

from torchmanager_metrics.metric import at_least_float32, overrides

from .loss import Loss, averaged_elements, check_non_negative

__all__ = ["BCEWithLogits", "CrossEntropy", "FocalCrossEntropy", "class_labels", "focal_loss"]

_MEAN, _SUM = 1, 2  # torch's reduction enums (`torch.nn._reduction.get_enum`)
_NLL_SUM_AND_WEIGHT = {
    rank: getattr(op, "_op", op)  # the operator's C++ callable: `OpOverload.__call__` only adds a Python frame
    for rank, op in ((2, torch.ops.aten.nll_loss_forward.default), (4, torch.ops.aten.nll_loss2d_forward.default))
}
"""By input rank: torch's negative log-likelihood kernels, which return the loss and the total weight it divides by."""


def class_labels(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Labels as torch's cross entropy takes them: integer class indices as int64, probabilities as given.

    Integer labels of any integer dtype (uint8 masks, int32) are cast to int64; floating labels
    are class probabilities, must have the logits' shape and are cast to the logits' dtype.

    Raises:
        TypeError: `target` is not a tensor, or is a bool or complex tensor.
        ValueError: `target` is floating but not of `input`'s shape.
    """
    if not isinstance(target, torch.Tensor) or target.dtype == torch.bool or target.is_complex():
        received = f"dtype={target.dtype}" if isinstance(target, torch.Tensor) else f"type={type(target).__name__}"
        raise TypeError(
            "Cross-entropy labels must be a tensor of integer class indices or of float class probabilities. "
            f"Received: target {received}"
        )
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                "Floating cross-entropy labels are class probabilities and must have the logits' shape "
                "(N, C, ...); class indices must be an integer tensor of shape (N, ...). "
                f"Received: target dtype={target.dtype}, shape={tuple(target.shape)}, input shape={tuple(input.shape)}"
            )
        return target if target.dtype is input.dtype else target.to(input.dtype)
    return target if target.dtype is torch.int64 else target.long()


def focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    gamma: float = 1.0,
    *,
    ignore_index: int = 255,
    calculate_average: bool = True,
) -> torch.Tensor:
    """Focal cross entropy, `-alpha * (1 - p_t) ** gamma * log(p_t)`, averaged or summed.

    `p_t` is the softmax probability (over dim 1) of the true class. Elements labelled
    `ignore_index` contribute nothing, and the average is taken over the other elements
    (upstream divided by all elements, ignored ones included).

    Computed in float32 or wider (bfloat16/float16 logits are widened).

    Args:
        input: Logits of shape (N, C, ...).
        target: Integer class indices of shape (N, ...), or class probabilities of `input`'s shape.
        alpha: Non-negative scale.
        gamma: Non-negative focusing exponent (0 gives cross entropy).
        ignore_index: Label value to ignore (integer labels only; probability labels ignore nothing).
        calculate_average: Average over the non-ignored elements if True, else sum.
    """
    total, kept = focal_sum(input, target, alpha, gamma, ignore_index=ignore_index)
    if not calculate_average:
        return total
    return total / (kept.clamp_min(1) if isinstance(kept, torch.Tensor) else kept)


def focal_sum(
    input: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, gamma: float = 1.0, *, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor | int]:
    """The focal loss summed over the elements (see `focal_loss`), and how many elements it covers.

    Returns:
        The sum (a float32 or wider scalar, with its gradient) and the count of elements not
        ignored: a 0-dim int64 tensor for class indices, an int (N x d1 x ...) for probabilities.
    """
    input = at_least_float32(input)
    target = class_labels(input, target)
    if target.is_floating_point():  # torch refuses `ignore_index` with probability labels
        ce = F.cross_entropy(input, target, reduction="none")
    else:
        ce = F.cross_entropy(input, target, reduction="none", ignore_index=ignore_index)
    p_t = torch.exp(-ce)
    focal = alpha * (1 - p_t).clamp_min(0) ** gamma * ce
    kept = focal.numel() if target.is_floating_point() else (target != ignore_index).sum()
    return focal.sum(), kept


def _own_forward(loss: Loss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The `forward` of the torch loss module a class here built for itself.

    That module is never a user's (no hooks, no `__call__` of its own), so its `forward` runs alone;
    it is read from `_modules` because `Module.__getattr__` costs microseconds on every batch.
    """
    module = loss._modules["_metric_fn"]
    assert module is not None
    return cast(Callable[[torch.Tensor, torch.Tensor], torch.Tensor], module.forward)


class CrossEntropy(Loss):
    """Cross entropy of logits against class indices or probabilities (`torch.nn.CrossEntropyLoss`).

    Integer labels of any integer dtype are cast to int64; bfloat16/float16 logits and
    probabilities are widened to float32. Note that torch's first positional argument is the
    per-class `weight` tensor, while the keyword `weight=` is this loss's coefficient, as upstream.

    Args:
        *args: Positional arguments of `torch.nn.CrossEntropyLoss` (class weights, ...).
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the loss.
        **kwargs: Keyword arguments of `torch.nn.CrossEntropyLoss` (`ignore_index`, `reduction`,
            `label_smoothing`).
    """

    def __init__(self, *args: Any, target: str | None = None, weight: float = 1, **kwargs: Any) -> None:
        super().__init__(torch.nn.CrossEntropyLoss(*args, **kwargs), target=target, weight=weight)
        self._plain = not overrides(self, CrossEntropy, "forward")  # else the subclass's forward is the value

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Add the batch to the epoch mean and return its weighted loss, gradient attached.

        With `reduction="mean"`, each batch counts by what torch's mean divides by: its elements
        not labelled `ignore_index`, each weighted by its class weight (for probability labels,
        the N x d1 x ... positions), so the epoch value is torch's cross entropy over the whole
        data set at once, whatever the batching. A batch whose elements are all ignored has no
        mean: evaluated (logits without gradient) it adds nothing; trained on, its loss and
        gradient are torch's NaN. Other reductions count samples.
        """
        module: torch.nn.CrossEntropyLoss = self._modules["_metric_fn"]  # type: ignore[assignment]
        nll = _NLL_SUM_AND_WEIGHT.get(input.dim()) if isinstance(input, torch.Tensor) else None
        if (  # a training step's common case, checked without a call: float32 logits, int64 indices, torch's mean
            nll is None
            or not input.requires_grad
            or input.dtype is not torch.float32
            or not isinstance(target, torch.Tensor)
            or target.dtype is not torch.int64
            or not self._plain
            or module.label_smoothing != 0
            or module.reduction != "mean"
        ):
            return self._update_any(input, target)
        # F.cross_entropy's two kernels and its mean, whose backward is F.cross_entropy's, with the total weight
        # (the kernel checks the shapes as F.cross_entropy does)
        value: torch.Tensor
        total_weight: torch.Tensor
        value, total_weight = nll(
            torch.log_softmax(input, 1), target, module._buffers.get("weight"), _MEAN, module.ignore_index
        )
        if self._weight != 1:
            value = torch.mul(value, self._weight)
        self.add_batch_mean(value.data, total_weight)  # a batch all ignored is NaN here, as torch's loss
        return value

    def _update_any(self, input: Any, target: Any) -> torch.Tensor:
        """`update` for evaluation and every other input and setting: the batch's sum over its denominator.

        A batch whose labels are all ignored adds nothing (its sum and denominator are 0).
        """
        module = cast(torch.nn.CrossEntropyLoss, self._modules["_metric_fn"])
        if not self._plain or module.reduction != "mean" or not isinstance(input, torch.Tensor):
            return super().update(input, target)  # what is not a tensor gets torch's own error from `forward`
        total, denominator = self.sum_and_denominator(input, target)
        value = self.weigh(total / denominator)
        self.add_batch_sum(total.detach() if self._weight == 1 else total.detach() * self._weight, denominator)
        return value

    def sum_and_denominator(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | int]:
        """The batch's cross entropy summed over its elements, and what torch's mean divides that sum by.

        Returns:
            The sum (float32 or wider, with its gradient), and the total class weight of the
            elements not ignored (a 0-dim tensor; their count without class weights), or, for
            probability labels, the number of positions N x d1 x ... (an int).
        """
        input = at_least_float32(input)
        labels = class_labels(input, target)
        module = cast(torch.nn.CrossEntropyLoss, self._modules["_metric_fn"])
        class_weight = module._buffers.get("weight")
        if labels.is_floating_point():
            positions = input.numel() // input.shape[1 if input.dim() > 1 else 0]
            total = F.cross_entropy(
                input, labels, weight=class_weight, reduction="sum", label_smoothing=module.label_smoothing
            )
            return total, positions
        nll = _NLL_SUM_AND_WEIGHT.get(input.dim())
        if (
            nll is not None
            and module.label_smoothing == 0
            and labels.dim() == input.dim() - 1
            and labels.shape[0] == input.shape[0]  # else F.cross_entropy below says what does not match
        ):
            # what F.cross_entropy runs (log-softmax, then this kernel), summed, with the total weight it divides by
            total, total_weight = nll(torch.log_softmax(input, 1), labels, class_weight, _SUM, module.ignore_index)
            return total, total_weight
        mean = F.cross_entropy(
            input,
            labels,
            weight=class_weight,
            ignore_index=module.ignore_index,
            label_smoothing=module.label_smoothing,
        )
        kept = labels != module.ignore_index
        if class_weight is None:
            denominator = kept.sum()
        else:
            denominator = torch.where(kept, class_weight[labels.where(kept, 0)], 0).sum()
        return torch.where(denominator > 0, mean * denominator, 0), denominator

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input = at_least_float32(input)
        # `torch.nn.CrossEntropyLoss.forward` as torch writes it, its settings read without Module.__getattr__
        # (microseconds on every batch); the module is this class's own, so nothing of the user's is skipped
        module = cast(torch.nn.CrossEntropyLoss, self._modules["_metric_fn"])
        return F.cross_entropy(
            input,
            class_labels(input, target),
            weight=module._buffers.get("weight"),
            ignore_index=module.ignore_index,
            reduction=module.reduction,
            label_smoothing=module.label_smoothing,
        )


class BCEWithLogits(Loss):
    """Binary cross entropy of logits (`torch.nn.BCEWithLogitsLoss`), in float32 or wider.

    Integer or bool labels are cast to the logits' float dtype; bfloat16/float16 logits and labels
    are widened to float32.

    Args:
        *args: Positional arguments of `torch.nn.BCEWithLogitsLoss`.
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the loss.
        **kwargs: Keyword arguments of `torch.nn.BCEWithLogitsLoss` (`pos_weight`, `reduction`).
    """

    def __init__(self, *args: Any, target: str | None = None, weight: float = 1, **kwargs: Any) -> None:
        super().__init__(torch.nn.BCEWithLogitsLoss(*args, **kwargs), target=target, weight=weight)
        self._plain = not overrides(self, BCEWithLogits, "forward")  # else the subclass's forward is the value

    def denominator(self, input: Any, target: Any) -> int:
        """The elements averaged with `reduction="mean"` (torch divides by all of them), else the samples."""
        module = cast(torch.nn.BCEWithLogitsLoss, self._modules["_metric_fn"])
        return averaged_elements(input, target, self._plain and module.reduction == "mean")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input = at_least_float32(input)
        if isinstance(target, torch.Tensor):
            target = at_least_float32(target) if target.is_floating_point() else target.to(input.dtype)
        return _own_forward(self)(input, target)


class FocalCrossEntropy(Loss):
    """Focal cross entropy (see `focal_loss`), which down-weights well-classified elements.

    Args:
        alpha: Non-negative scale.
        gamma: Non-negative focusing exponent.
        calculate_average: Average over the non-ignored elements if True, else sum.
        ignore_index: Label value to ignore.
        **kwargs: `target` and `weight` of `Loss`.
    """

    def __init__(
        self,
        alpha: float = 1,
        gamma: float = 1,
        calculate_average: bool = True,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha
        self.gamma = gamma
        self.calculate_average = calculate_average
        self.ignore_index = ignore_index
        self._plain = not overrides(self, FocalCrossEntropy, "forward")  # else the subclass's forward is the value

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Add the batch to the epoch mean and return its weighted loss, gradient attached.

        Averaged, each batch counts by its elements not ignored (see `focal_sum`), so the epoch
        value is the focal loss of the whole data set at once; summed, by its samples.
        """
        if not self._plain or not self.calculate_average:
            return super().update(input, target)
        total, kept = focal_sum(input, target, self._alpha, self._gamma, ignore_index=self.ignore_index)
        value = self.weigh(total / (kept.clamp_min(1) if isinstance(kept, torch.Tensor) else kept))
        self.accumulate_sum(total if self._weight == 1 else total.detach() * self._weight, kept)
        return value

    @property
    def alpha(self) -> float:
        """The non-negative scale of the loss."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = check_non_negative("alpha", value)

    @property
    def gamma(self) -> float:
        """The non-negative focusing exponent."""
        return self._gamma

    @gamma.setter
    def gamma(self, value: float) -> None:
        self._gamma = check_non_negative("gamma", value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(
            input,
            target,
            self._alpha,
            self._gamma,
            ignore_index=self.ignore_index,
            calculate_average=self.calculate_average,
        )
