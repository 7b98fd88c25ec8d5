"""Error types raised by the managers, `StopTraining`, the clean way to end `fit` early, and `Preempted`.

Upstream torchmanager 1.5's names are here too (`TestingError`, `PredictionError`, `raise_error`,
`VersionError`, `ConfigsFormatError`), and its submodule paths (`errors.train`, `errors.runtime`...)
re-export them.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import NoReturn

from ..version import VersionError, warn_upstream_name

__all__ = [
    "ConfigsFormatError",
    "LossError",
    "MetricError",
    "ModelError",
    "NonFiniteLossError",
    "Preempted",
    "PredictionError",
    "StopTraining",
    "TestingError",
    "VersionError",
    "describe",
    "failure_message",
    "raise_error",
]


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
        message: What went wrong; without it (upstream's `MetricError(name)`), a message naming the
            metric and pointing at the chained error.
    """

    def __init__(self, name: str, message: str | None = None) -> None:
        if message is None:
            message = f"Metric `{name}` failed; the error chained below says why. Received: name={name!r}"
        super().__init__(message)
        self.name = name


class TestingError(RuntimeError):
    """Testing stopped on an error (upstream raises it from `test`, chaining the cause)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, message: str = "Testing failed; the error chained below says why.") -> None:
        super().__init__(message)


class PredictionError(RuntimeError):
    """Prediction stopped on an error (upstream raises it from `predict`, chaining the cause)."""

    def __init__(self, message: str = "Prediction failed; the error chained below says why.") -> None:
        super().__init__(message)


class ConfigsFormatError(ValueError):
    """A configuration is invalid: an unknown key or a value of the wrong type in a config file,
    a file that is not a mapping, or a value `format_arguments` rejected.

    Args:
        cfg_type: The configs class being built (upstream's `ConfigsFormatError(cfg_type)`).
        reason: What is wrong; without it, upstream's generic message.
    """

    def __init__(self, cfg_type: type, /, reason: str | None = None) -> None:
        super().__init__(reason if reason is not None else f"Cannot format configs to type `{cfg_type.__name__}`.")
        self.cfg_type = cfg_type


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


def failure_message(what: str, error: BaseException, fix: str, received: str) -> str:
    """The house-format message for a user's model, loss or metric that raised `error`.

    `"<what>: <error>. <fix> Received: <received>"`: the error's own text ends in a full stop
    (added when it has none, as torch's shape errors), so that what to do reads as a sentence of
    its own, and the values received come last.
    """
    cause = str(error).strip() or type(error).__name__
    return f"{what}: {cause}{'' if cause.endswith(('.', '!', '?')) else '.'} {fix} Received: {received}"


def raise_error(error: BaseException) -> NoReturn:
    """Raise `error`: upstream's idiom `assert condition, raise_error(ValueError(...))` raises that error."""
    raise error


def _raise(error: BaseException) -> NoReturn:
    """Upstream 1.5's deprecated spelling of `raise_error` (warns once, then raises `error`)."""
    warn_upstream_name("torchmanager_core._raise", "`raise_error` (or a plain `raise`)")
    raise error
