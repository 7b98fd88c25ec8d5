"""Error types raised by the managers, and `StopTraining`, the clean way to end `fit` early."""

from __future__ import annotations

__all__ = ["LossError", "MetricError", "ModelError", "NonFiniteLossError", "StopTraining", "describe"]


class StopTraining(Exception):
    """Raise it from a callback (or a step) to end `fit` cleanly after the current hook.

    Args:
        epoch: Optional index of the epoch at which training stopped (upstream passes it).
        *args: The usual exception message arguments.
    """

    def __init__(self, epoch: int | None = None, *args: object) -> None:
        super().__init__(*args)
        self.epoch = epoch


class ModelError(RuntimeError):
    """The model failed on the input it was given (the original error is chained)."""


class LossError(RuntimeError):
    """A loss function failed on the model output and label it was given."""


class MetricError(RuntimeError):
    """A metric failed on the model output and label it was given.

    Args:
        name: The metric's name in the manager's `metrics` dict.
        message: What went wrong.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class NonFiniteLossError(FloatingPointError):
    """The epoch's loss became NaN or infinite (checked once per epoch, never per step)."""


def describe(value: object) -> str:
    """A short description of a batch value for error messages: its shape, else its type."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)}"
    if isinstance(value, dict):
        return "dict {" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    return f"type {type(value).__name__}"
