"""The checks of a manager's `loss_fn` and `metrics` arguments, and the names their values report under.

Who owns what: this module says what a manager accepts as losses and metrics (and refuses, with
what to write instead); `compiled` calls them and keeps their epoch values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .protocols import has_state
from .tracking import VAL_PREFIX, summable

__all__ = ["LossDict", "check_loss_fn", "check_metrics", "check_summary_names"]


def check_loss_fn(loss_fn: object) -> Callable[..., Any] | dict[str, Callable[..., Any]] | None:
    """Check the `loss_fn` argument of a manager: None, a callable, or a non-empty dict of callables."""
    _refuse_a_class(loss_fn, "loss_fn")
    if loss_fn is None or (callable(loss_fn) and not isinstance(loss_fn, Mapping)):
        return loss_fn
    if isinstance(loss_fn, Mapping):
        if not loss_fn:
            raise ValueError(
                "`loss_fn` must not be an empty dict: give at least one loss, or None. Received: loss_fn={}"
            )
        for name, fn in loss_fn.items():
            _refuse_a_class(fn, f"loss_fn[{name!r}]")
            if not isinstance(name, str) or not callable(fn):
                raise TypeError(
                    "`loss_fn` as a dict must map str names to callables `fn(y, label) -> scalar tensor`. "
                    f"Received: loss_fn[{name!r}]={fn!r}"
                )
        return LossDict(loss_fn)
    raise TypeError(
        "`loss_fn` must be a loss (a callable `fn(y, label) -> scalar tensor`, such as "
        f"torchmanager.losses.CrossEntropy()), a dict of them, or None. Received: loss_fn={loss_fn!r}"
    )


class LossDict(dict[str, Callable[..., Any]]):
    """A dict of named losses that is also their sum: `loss_fn(y, label)` adds the parts (each applies its own
    `weight` and `target`), as upstream 1.5's `MultiLosses` made of a dict did, so a step of the user's can call it."""

    def __call__(self, y: Any, label: Any) -> torch.Tensor:
        values = [summable(fn(y, label)) for fn in self.values()]
        return sum(values[1:], values[0])


def check_summary_names(loss_fn: object, metrics: Mapping[str, Any]) -> None:
    """Raise `ValueError` when two values would report under one name in an epoch's summary.

    Validation reports each value as `val_<name>` (a name starting with `val_` as it is), beside
    the training values: a metric `acc` beside a metric `val_acc`, a loss part `val` (reported
    `val_loss`), a metric `ce_loss` beside a loss part `ce`, or a metric `val_loss` beside a
    `loss_fn` would silently overwrite one another, and a callback monitoring it would read the
    wrong one. Metrics named `val_*` report only when validating or testing (upstream's convention),
    so a metric `val_loss` is unambiguous in a manager without `loss_fn`, as `ce_loss` is beside a
    single loss.
    """
    losses: list[tuple[str, str]] = []
    if loss_fn is not None:
        losses.append(("loss", "the total loss"))
    if isinstance(loss_fn, Mapping):
        losses += [(f"{name}_loss", f"loss `{name}`") for name in loss_fn]
    named = losses + [(name, f"metric `{name}`") for name in metrics]
    # training reports every loss, and the metrics not named `val_*` (those run only when validating or testing)
    claims = losses + [(name, what) for name, what in named[len(losses) :] if not name.startswith(VAL_PREFIX)]
    claims += [
        (name if name.startswith(VAL_PREFIX) else VAL_PREFIX + name, f"{what} on validation") for name, what in named
    ]
    reported: dict[str, str] = {}
    for name, what in claims:
        if name in reported:
            raise ValueError(
                f"Two values would be reported as `{name}` in an epoch's summary: {reported[name]} and {what}; rename "
                f"one (validation prefixes `{VAL_PREFIX}` to every name). "
                f"Received: losses {sorted(dict(losses))}, metrics {sorted(metrics)}"
            )
        reported[name] = what


def _refuse_a_class(fn: object, where: str) -> None:
    """Raise `TypeError` when a loss or metric is given as its class: calling it would build one, not score a batch."""
    if isinstance(fn, type):
        raise TypeError(
            f"`{where}` is the class {fn.__name__}, not an instance: write {fn.__name__}() (with its arguments). "
            f"Received: {where}={fn!r}"
        )


def check_metrics(metrics: object) -> dict[str, Callable[..., Any]]:
    """Check the `metrics` argument of a manager: None or a dict of str names to callables.

    As upstream 1.5, a loss (a stateful callable with a float `weight`, such as
    `torchmanager.losses.CrossEntropy()`) given as a metric reports as `<name>_loss`: under a name
    ending in `_loss` as it is, under another name with `_loss` appended. Whether a name clashes
    with the losses' is for `check_summary_names` to say.

    Raises:
        TypeError: `metrics` is not a dict of str names to callables.
        ValueError: A metric that is not a loss is named `loss` (the total loss's name), or two
            metrics would report under one name.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "`metrics` must be a dict of names to metrics, e.g. "
            f"{{'accuracy': torchmanager.metrics.SparseCategoricalAccuracy()}}. Received: metrics={metrics!r}"
        )
    checked: dict[str, Callable[..., Any]] = {}
    for name, fn in metrics.items():
        _refuse_a_class(fn, f"metrics[{name!r}]")
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(
                f"`metrics` must map str names to callables `fn(y, label)`. Received: metrics[{name!r}]={fn!r}"
            )
        reported = f"{name}_loss" if _is_loss(fn) and not name.endswith("_loss") else name
        if reported == "loss":
            raise ValueError(
                "`loss` names the total of `loss_fn` in a summary; give this metric another name. "
                f"Received: metrics key {name!r}"
            )
        if reported in checked:
            raise ValueError(
                f"Two metrics would report as `{reported}`: a loss given as a metric reports as `<name>_loss` "
                f"(as in torchmanager 1.5); rename one. Received: metrics keys {sorted(metrics)}"
            )
        checked[reported] = fn
    return checked


def _is_loss(fn: object) -> bool:
    """Whether `fn` is a loss object of ours or of upstream's kind: its own state and a float `weight`."""
    weight = getattr(fn, "weight", None)
    return has_state(fn) and isinstance(weight, (int, float)) and not isinstance(weight, bool)
