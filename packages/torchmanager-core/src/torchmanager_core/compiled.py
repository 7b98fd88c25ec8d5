"""How a manager calls its `loss_fn` and `metrics`, and how it reads their epoch values.

Who owns what: a loss or metric with its own streaming state (`reset()` and `result`, e.g. ours or
torchmetrics') keeps its epoch value itself; for a plain callable (a `torch.nn` loss, a function)
this module keeps a sample-weighted mean on the device. Either way the managers see one object
with `reset()`, `epoch_values()` (epoch tensors by summary name) and `owned` (the names it reports),
and nothing here reads a tensor on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .errors import LossError, MetricError, describe
from .protocols import has_state, read_result
from .tracking import VAL_PREFIX, MeanTracker, count_samples, summable

__all__ = ["CompiledLoss", "CompiledMetrics", "LossDict", "check_loss_fn", "check_metrics"]


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


def _cloned(value: Any) -> Any:
    """`value` with every tensor in it (nested in dicts) copied: a state to keep while the original changes."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _cloned(item) for key, item in value.items()}
    return value


class _Streams:
    """Shared machinery: stateful callables read their own result, the others are tracked here."""

    def __init__(self, fns: Mapping[str, Callable[..., Any]]) -> None:
        self.fns = dict(fns)
        self.stateful = {name: has_state(fn) for name, fn in self.fns.items()}
        self.tracker = MeanTracker()
        self.all_stateful = all(self.stateful.values())  # then no batch size is needed: each keeps its own
        self.calls = 0  # host-side count of batches since reset: tells whether the values mean anything

    def reset(self) -> None:
        for name, fn in self.fns.items():
            if self.stateful[name]:
                fn.reset()  # type: ignore[attr-defined]
        self.tracker.reset()
        self.calls = 0

    def modules(self) -> Iterator[torch.nn.Module]:
        return (fn for fn in self.fns.values() if isinstance(fn, torch.nn.Module))

    def holds(self, fns: Mapping[str, Any]) -> bool:
        """Whether these are exactly `fns` (the same names, the same objects): a dict changed in place is not."""
        return self.fns.keys() == fns.keys() and all(self.fns[key] is fns[key] for key in fns)

    def state_dict(self) -> dict[str, Any]:
        """The running state: each module's state dict, the tracked means and the call count (copies)."""
        return {
            "fns": {name: _cloned(fn.state_dict()) for name, fn in self.fns.items() if isinstance(fn, torch.nn.Module)},
            "tracker": _cloned(self.tracker.state_dict()),
            "calls": self.calls,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()` (states of callables this object does not have are skipped)."""
        for name, fn_state in state.get("fns", {}).items():
            fn = self.fns.get(name)
            if isinstance(fn, torch.nn.Module):
                fn.load_state_dict(fn_state)
        self.tracker.load_state_dict(state.get("tracker", {"totals": {}, "counts": {}}))
        self.calls = int(state.get("calls", 0))

    def check_state_dict(self, state: Mapping[str, Any], what: str, source: str) -> None:
        """Raise `ValueError` if a module's saved state does not fit the module of the same name."""
        for name, fn_state in state.get("fns", {}).items():
            fn = self.fns.get(name)
            if isinstance(fn, torch.nn.Module) and set(fn.state_dict()) != set(fn_state):
                raise ValueError(
                    f"`{source}` holds a state for the {what} `{name}` that does not fit this manager's {type(fn).__name__} "
                    f"(keys {sorted(fn_state)} vs {sorted(fn.state_dict())}); use the {what} that saved it under that name. "
                    f"Received: {what}s[{name!r}]={type(fn).__name__}"
                )

    def _value(self, name: str) -> torch.Tensor:
        if self.stateful[name]:
            return torch.as_tensor(read_result(self.fns[name]))
        return self.tracker.means()[name]


class CompiledLoss(_Streams):
    """The manager's `loss_fn` as one callable: a single loss, or the sum of a dict of losses.

    Each loss of ours applies its own `weight` and `target`; the summary reports the total as
    "loss" and, for a dict, each part as "<name>_loss". A dict's total is summed in float32 or
    wider (its parts may be bfloat16 or float16 under autocast); every epoch value is a float32
    or wider running sum. As upstream's `compiled_losses`, it is called as
    `compiled_losses(y, label)`, lists its parts in `losses` and reads `result`.
    """

    def __init__(self, loss_fn: Callable[..., Any] | Mapping[str, Callable[..., Any]]) -> None:
        self.is_dict = isinstance(loss_fn, Mapping)
        super().__init__(loss_fn if isinstance(loss_fn, Mapping) else {"loss": loss_fn})
        self.owned = ["loss", *(f"{name}_loss" for name in self.fns)] if self.is_dict else ["loss"]

    def __call__(self, y: Any, label: Any) -> torch.Tensor:
        """The total loss of a batch (a scalar with its graph); updates every part's epoch value."""
        n = 0 if self.all_stateful else count_samples(y, label)
        total: torch.Tensor | None = None
        for name, fn in self.fns.items():
            try:
                value = fn(y, label)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
                raise LossError(
                    f"Loss `{name}` failed on model output {describe(y)} and label {describe(label)}: {error} "
                    "Check that the model output and the label fit this loss (shapes, dtypes, `target` keys)."
                ) from error
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise LossError(
                    f"Loss `{name}` must return a scalar tensor (reduce it, e.g. with `.mean()`). Received: {got}"
                )
            if value.dim():
                value = value.reshape(())
            if not self.stateful[name]:
                self.tracker.update(name, value, n)
            total = value if total is None else summable(total) + value
        assert total is not None  # at least one part, checked by `check_loss_fn`
        if self.is_dict and not self.all_stateful:
            self.tracker.update("loss", total, n)
        self.calls += 1
        return total

    @property
    def losses(self) -> list[Callable[..., Any]]:
        """The loss functions summed, in order (one for a single loss)."""
        return list(self.fns.values())

    @property
    def result(self) -> torch.Tensor:
        """The total loss over the batches since `reset()` (a tensor; reading it waits for the device)."""
        return self.epoch_values()["loss"]

    def epoch_values(self) -> dict[str, torch.Tensor]:
        """The epoch values since `reset()`, as tensors: "loss", and "<name>_loss" for a dict."""
        if not self.is_dict:
            return {"loss": self._value("loss")}
        parts = {f"{name}_loss": self._value(name) for name in self.fns}
        # losses of ours each average over their own denominator: the exact total is the sum of their values
        if self.all_stateful:
            values = [summable(value) for value in parts.values()]
            total = sum(values[1:], values[0])
        else:
            total = self.tracker.means()["loss"]
        return {"loss": total, **parts}


class CompiledMetrics(_Streams, Mapping[str, Callable[..., Any]]):
    """The manager's `metrics` dict: calls each on a batch and reports each under its name.

    Metrics named `val_*` run only when testing or validating (upstream's convention). It reads
    as the dict of metrics by name (`items()`, `[name]`), as upstream's `compiled_metrics` did.
    """

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.fns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fns)

    def __len__(self) -> int:
        return len(self.fns)

    def __init__(self, metrics: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__(metrics)
        self.training_names = [name for name in self.fns if not name.startswith("val_")]
        # metrics that can add a batch without making its value (`update_state`: ours)
        self.counting = {
            name: self.stateful[name] and callable(getattr(fn, "update_state", None)) for name, fn in self.fns.items()
        }

    def owned(self, training: bool) -> list[str]:
        """The summary names these metrics report in training or in testing."""
        return self.training_names if training else list(self.fns)

    def __call__(self, y: Any, label: Any, *, training: bool) -> dict[str, torch.Tensor]:
        """Update each metric with a batch and return its batch value (no gradient)."""
        if isinstance(y, torch.Tensor) and not y.requires_grad:
            return self._update(y, label, training, True)  # nothing to track: spare the no_grad context
        with torch.no_grad():
            return self._update(y, label, training, True)

    def update_state(self, y: Any, label: Any, *, training: bool) -> None:
        """Update each metric with a batch without making its batch value (for a step whose values nobody reads).

        A metric with its own `update_state` (ours) counts directly; any other is called as usual.
        """
        if isinstance(y, torch.Tensor) and not y.requires_grad:
            self._update(y, label, training, False)
        else:
            with torch.no_grad():
                self._update(y, label, training, False)

    def _update(self, y: Any, label: Any, training: bool, wanted: bool) -> dict[str, torch.Tensor]:
        """Update each metric with a batch; its batch values, when `wanted` (the body of `__call__` and `update_state`)."""
        n = 0 if self.all_stateful else count_samples(y, label)
        values: dict[str, torch.Tensor] = {}
        for name in self.owned(training):
            fn = self.fns[name]
            try:
                if not wanted and self.counting[name]:
                    fn.update_state(y, label)  # type: ignore[attr-defined]
                    continue
                value = fn(y, label)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
                raise MetricError(
                    name,
                    f"Metric `{name}` failed on model output {describe(y)} and label {describe(label)}: {error} "
                    "Check that the model output and the label fit this metric.",
                ) from error
            value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
            if not self.stateful[name]:
                self.tracker.update(name, value, n)
            values[name] = value
        self.calls += 1
        return values

    def epoch_values(self, training: bool) -> dict[str, torch.Tensor]:
        """Each metric's epoch value since `reset()`, as tensors."""
        return {name: self._value(name) for name in self.owned(training)} if self.calls else {}
