"""Numeric precision of a run, one class per mode: the forward context, backward scaling, the optimizer step.

Who owns what: a `Precision` decides how a forward runs (autocast or not, inputs cast or not), how a
loss is scaled before backward, how the optimizer steps (unscaling first, skipping a step whose
gradients overflowed) and what a checkpoint keeps of it (the grad scaler's state). The loop calls
these and never names a dtype. Running sums of losses and metrics stay float32 or wider whatever
the mode (`tracking.summable`). Modes (Lightning's names; torchmanager's older spellings too):

- "32" (`"32-true"`): float32 throughout.
- "bf16-mixed" (`"bf16"`): float32 weights, forward autocast to bfloat16.
- "16-mixed" (`"16"`): float32 weights, forward autocast to float16, loss scaled by a `GradScaler`
  (a step whose gradients hold inf/NaN is skipped, and not counted as an optimizer update).
- "bf16-true": weights and compute in bfloat16 (the model and float inputs are cast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["PRECISIONS", "BF16Mixed", "BF16True", "FP16Mixed", "Precision", "check_precision", "select_precision"]


class Precision:
    """Float32 throughout: no autocast, no scaling (the base of every mode).

    Attributes:
        name: The canonical option value ("32", "bf16-mixed", "16-mixed", "bf16-true").
        autocast_dtype: The dtype forward passes autocast to, or None.
        device_type: The run's device type ("cpu", "cuda"), set by `setup`.
    """

    name = "32"
    autocast_dtype: torch.dtype | None = None
    scales_loss = False
    """Whether `scale` changes the loss (then backward cannot be plain)."""
    plain_step = True
    """Whether `step` is `optimizer.step()` as it is."""
    converts_input = False
    """Whether `convert_input` changes a batch's input."""

    def __init__(self) -> None:
        self.device_type = "cpu"

    def setup(self, model: torch.nn.Module, device: torch.device, *, autocast: bool = True) -> None:
        """Prepare a run on `device` with the raw `model` already there.

        `autocast=False`: the strategy runs the forward in the mode's dtype itself (FSDP2's
        `MixedPrecisionPolicy`), so no autocast context is entered in this run.
        """
        self.device_type = device.type
        self.autocast_dtype = type(self).autocast_dtype if autocast else None

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """The context a forward runs in (nothing for float32)."""
        return contextlib.nullcontext()

    def convert_input(self, data: Any) -> Any:
        """A batch's input as the model takes it (as it is, but for "bf16-true")."""
        return data

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call backward on."""
        return loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients to their true scale before they are clipped (once per step)."""

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step the optimizer (a mode may skip a step whose gradients overflowed)."""
        optimizer.step()

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this mode (None: nothing)."""
        return None

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore `state_dict()` (now, or when the run starts)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BF16Mixed(Precision):
    """Float32 weights; forward passes autocast to bfloat16 (no scaling: bfloat16 has float32's range)."""

    name = "bf16-mixed"
    autocast_dtype = torch.bfloat16

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)


class BF16True(Precision):
    """Weights and compute in bfloat16: the model is cast when a run starts, float inputs at each batch.

    Gradients and optimizer states are bfloat16 too (half the memory of "bf16-mixed"); losses and
    metrics still sum their epoch values in float32.
    """

    name = "bf16-true"
    converts_input = True

    def setup(self, model: torch.nn.Module, device: torch.device, *, autocast: bool = True) -> None:
        super().setup(model, device, autocast=autocast)
        model.to(torch.bfloat16)

    def convert_input(self, data: Any) -> Any:
        if isinstance(data, torch.Tensor):
            return data.to(torch.bfloat16) if data.is_floating_point() else data
        if isinstance(data, Mapping):
            return {key: self.convert_input(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return type(data)(self.convert_input(value) for value in data)
        return data


class FP16Mixed(Precision):
    """Float32 weights; forward passes autocast to float16, the loss scaled by a `torch.amp.GradScaler`.

    A step whose gradients hold inf or NaN is skipped by the scaler (the optimizer is not called, so
    it is no optimizer update: `global_step` does not move). The scaler's state is kept in checkpoints.
    """

    name = "16-mixed"
    autocast_dtype = torch.float16
    scales_loss = True
    plain_step = False

    def __init__(self) -> None:
        super().__init__()
        self.scaler: torch.amp.GradScaler | None = None
        self._pending: dict[str, Any] | None = None  # a checkpoint's state, until the scaler exists
        self._unscaled = False

    def setup(self, model: torch.nn.Module, device: torch.device, *, autocast: bool = True) -> None:
        super().setup(model, device, autocast=autocast)
        if self.scaler is None:  # kept across runs: its scale carries over
            self.scaler = torch.amp.GradScaler(device.type)
            if self._pending is not None:
                self.scaler.load_state_dict(self._pending)
                self._pending = None

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device_type, dtype=torch.float16)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None and not self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()
        self._unscaled = False

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else self._pending

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state is None:
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(dict(state))
        else:
            self._pending = dict(state)


PRECISIONS: dict[str, type[Precision]] = {
    "32": Precision,
    "32-true": Precision,
    "bf16": BF16Mixed,
    "bf16-mixed": BF16Mixed,
    "bf16-true": BF16True,
    "16": FP16Mixed,
    "16-mixed": FP16Mixed,
}
"""Accepted `precision` values (Lightning's spellings and torchmanager's older ones) and their classes."""


def check_precision(precision: object) -> str:
    """`precision` as a key of `PRECISIONS` (ints 32 and 16 are accepted).

    Raises:
        ValueError: An unknown value.
    """
    key = str(precision) if isinstance(precision, (str, int)) and not isinstance(precision, bool) else None
    if key not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {sorted(PRECISIONS)}: '32' (float32), 'bf16-mixed' (bfloat16 autocast), "
            "'16-mixed' (float16 autocast with gradient scaling) or 'bf16-true' (bfloat16 weights and compute). "
            f"Received: precision={precision!r}"
        )
    return key


def select_precision(precision: object) -> Precision:
    """A new `Precision` for the option value `precision` (see `check_precision`)."""
    return PRECISIONS[check_precision(precision)]()
