"""Error types raised by the managers, `StopTraining`, the clean way to end `fit` early, and `Preempted`."""

from __future__ import annotations

import signal
from collections.abc import Sequence

__all__ = ["LossError", "MetricError", "ModelError", "NonFiniteLossError", "Preempted", "StopTraining", "describe"]


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


class Preempted(SystemExit):
    """`fit` stopped for SIGTERM or SIGUSR1, after saving the run when it has a checkpoint: the process should end.

    Uncaught, the interpreter exits with `code`, 128 + the signal's number (143 for SIGTERM, 138 for
    SIGUSR1: what shells, Docker and Kubernetes report for a process that signal ended), and prints
    no traceback; catch it to run more code first. Every process of a torchrun launch raises it
    after the same step.

    Attributes:
        signal: The signal (the largest number any process received: the same on every process).
        checkpoints: The files the run was saved to (empty: nothing was saved).
    """

    def __init__(self, signum: int, checkpoints: Sequence[str]) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum)
        self.checkpoints = tuple(checkpoints)


def describe(value: object) -> str:
    """A short description of a batch value for error messages: its shape, else its type."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)}"
    if isinstance(value, dict):
        return "dict {" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    return f"type {type(value).__name__}"
