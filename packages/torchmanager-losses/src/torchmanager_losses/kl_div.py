"""Kullback-Leibler divergence: `kl_div_loss` and `KLDiv`, with the distillation temperature."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from torchmanager_metrics.metric import at_least_float32, overrides

from .loss import Loss, averaged_elements
from .reduction import replace_nan as replace_nan_values

__all__ = ["KLDiv", "kl_div_loss"]


def check_temperature(value: float | None) -> float | None:
    """Return `value` as a float, or None; raise unless it is None or a finite positive number.

    Raises:
        TypeError: `value` is neither None nor a real number.
        ValueError: `value` is zero, negative, NaN or infinite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`softmax_temperature` must be a positive float or None. Received: softmax_temperature={value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`softmax_temperature` must be a positive float or None. Received: softmax_temperature={value!r}"
        )
    return float(value)


def kl_div_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    softmax_temperature: float | None = None,
    log_target: bool = False,
    reduction: str = "mean",
    replace_nan: bool = False,
) -> torch.Tensor:
    """`KL(target || input)` as `torch.nn.functional.kl_div`, optionally tempered for distillation.

    Without a temperature, `input` holds log-probabilities and `target` probabilities (or
    log-probabilities with `log_target=True`), as in torch. With a temperature `T`, both are
    logits with classes on dim 1: `input` becomes `log_softmax(input / T)`, `target` becomes
    `softmax(target / T)` (its `log_softmax` with `log_target=True`), and the loss is multiplied
    by `T ** 2` (Hinton et al.'s scaling, which keeps gradients comparable across `T`). Upstream
    took a plain `softmax(target)` without the temperature (and, with `log_target`, passed
    `target / T` unnormalised), so student and teacher were softened differently.

    Args:
        input: Log-probabilities, or logits when `softmax_temperature` is given.
        target: Probabilities (log-probabilities with `log_target`), or logits with a temperature.
        softmax_temperature: Optional positive temperature.
        log_target: Whether `target` is passed to `kl_div` in log space.
        reduction: torch's reduction; "batchmean" is the true KL divergence per sample, "mean"
            (torch's default) also divides by the number of classes.
        replace_nan: Replace NaN/inf in the inputs (see `replace_nan`) and NaN/+inf in the loss by 0.

    Computed in float32 or wider (bfloat16/float16 inputs are widened).
    """
    temperature = check_temperature(softmax_temperature)
    input, target = at_least_float32(input), at_least_float32(target)
    if temperature is not None:
        input = F.log_softmax(input / temperature, dim=1)
        target = F.log_softmax(target / temperature, dim=1) if log_target else F.softmax(target / temperature, dim=1)
    if replace_nan:
        input, target = replace_nan_values(input), replace_nan_values(target)
    loss = F.kl_div(input, target, reduction=reduction, log_target=log_target)
    if temperature is not None:
        loss = loss * temperature**2
    if replace_nan:
        loss = loss.nan_to_num(0.0, posinf=0.0)
    return loss


class KLDiv(Loss):
    """Kullback-Leibler divergence loss (`torch.nn.KLDivLoss`), with an optional softmax temperature.

    See `kl_div_loss` for what the temperature does. Upstream's signature is kept.

    Args:
        *args: Positional arguments of `torch.nn.KLDivLoss`.
        replace_nan: Replace NaN/inf in inputs and loss (see `kl_div_loss`).
        softmax_temperature: Optional positive temperature; the inputs are then logits.
        target: Optional key picking one entry of dict model outputs and dict labels.
        weight: Finite, non-negative coefficient applied to the loss.
        **kwargs: Keyword arguments of `torch.nn.KLDivLoss` (`reduction`, `log_target`).
    """

    def __init__(
        self,
        *args: Any,
        replace_nan: bool = False,
        softmax_temperature: float | None = None,
        target: str | None = None,
        weight: float = 1,
        **kwargs: Any,
    ) -> None:
        # torch's loss is `_metric_fn`, as upstream 1.5 kept it: its subclasses read and replace it there
        super().__init__(torch.nn.KLDivLoss(*args, **kwargs), target=target, weight=weight)
        self.replace_nan = replace_nan
        self.softmax_temperature = softmax_temperature
        self._plain = not overrides(self, KLDiv, "forward")  # else the subclass's forward is the value

    def denominator(self, input: Any, target: Any) -> int:
        """The elements averaged with `reduction="mean"`, else the samples ("batchmean" divides by them)."""
        return averaged_elements(input, target, self._plain and self.reduction == "mean")

    @property
    def kl_div(self) -> torch.nn.KLDivLoss:
        """The `torch.nn.KLDivLoss` giving `reduction` and `log_target` (upstream's `_metric_fn`)."""
        loss = self._metric_fn
        if not isinstance(loss, torch.nn.KLDivLoss):
            raise TypeError(
                f"{type(self).__name__}._metric_fn must be a torch.nn.KLDivLoss (it gives `reduction` and `log_target`). "
                f"Received: _metric_fn={loss!r}"
            )
        return loss

    @property
    def log_target(self) -> bool:
        """Whether the label is in log space."""
        return bool(self.kl_div.log_target)

    @property
    def reduction(self) -> str:
        """torch's reduction of the element-wise divergences."""
        return str(self.kl_div.reduction)

    @property
    def softmax_temperature(self) -> float | None:
        """The positive temperature, or None when inputs are already (log-)probabilities."""
        return self._softmax_temperature

    @softmax_temperature.setter
    def softmax_temperature(self, value: float | None) -> None:
        self._softmax_temperature = check_temperature(value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kl_div_loss(
            input,
            target,
            softmax_temperature=self._softmax_temperature,
            log_target=self.log_target,
            reduction=self.reduction,
            replace_nan=self.replace_nan,
        )
