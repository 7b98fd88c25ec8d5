"""How a manager calls its `loss_fn` and `metrics`, and how it reads their epoch values.

Who owns what: a loss or metric with its own streaming state (`reset()` and `result`, e.g. ours or
torchmetrics') keeps its epoch value itself; for a plain callable (a `torch.nn` loss, a function)
this module keeps a sample-weighted mean on the device. Either way the managers see one object
with `reset()`, `epoch_values()` (epoch tensors by summary name) and `owned` (the names it reports),
and nothing here reads a tensor on the host. This module also defines what the running state of
a loss or metric is (`running_state`), the one definition that parking a pass, a checkpoint and a
resume use. The arguments are checked in `stream_checks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from .errors import LossError, MetricError, describe, failure_message
from .protocols import has_state, read_result
from .tracking import MeanTracker, count_samples, summable

__all__ = ["CompiledLoss", "CompiledMetrics", "load_running_state", "running_state"]


def _cloned(value: Any) -> Any:
    """`value` with every tensor in it (nested in dicts and lists) copied: a state to keep while the original changes."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _cloned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cloned(item) for item in value]
    return value


_BATCH_COUNTERS = ("_num_updates", "_update_count")
"""The number of batches a metric counted since its reset: ours (`Metric`) and torchmetrics' (`update_count`)."""


def running_state(fn: object) -> dict[str, Any]:
    """What a loss or metric carries from one batch to the next beyond its `state_dict()` (copies).

    The running state of a stream is `fn.state_dict()` and this, for `fn` and each module inside
    it (by qualified name): a metric of ours gives its own (`Metric.running_state`: its states
    with the batches still waiting on the host kept apart); any other module, the states it
    declares (`_defaults`, torchmetrics') that `state_dict()` leaves out (torchmetrics' are not
    persistent by default; a "cat" state is a list of tensors), its buffers registered as not
    persistent, and how many batches it counted since its reset. The same definition parks a
    pass (validation, a `test()` inside `fit`), goes into a checkpoint and resumes one
    (`load_running_state`). A callable that is not a module keeps nothing here.
    """
    if not isinstance(fn, torch.nn.Module):
        return {}
    state: dict[str, Any] = {}
    for prefix, module in fn.named_modules():
        own = getattr(module, "running_state", None)
        if callable(own) and callable(getattr(module, "load_running_state", None)):
            state[prefix] = {"own": own()}
            continue
        saved = module.state_dict(keep_vars=True) if _declared_states(module) else {}
        states = {name: _cloned(getattr(module, name)) for name in _declared_states(module) if name not in saved}
        for name in module._non_persistent_buffers_set:
            if module._buffers.get(name) is not None and name not in states:
                states[name] = _cloned(module._buffers[name])
        counters = {
            name: module.__dict__[name] for name in _BATCH_COUNTERS if isinstance(module.__dict__.get(name), int)
        }
        if states or counters:
            state[prefix] = {"states": states, "counters": counters}
    return state


def load_running_state(fn: object, state: Mapping[str, Any]) -> None:
    """Put back what `running_state` took (after `fn.load_state_dict` of its state dict); unknown modules are skipped."""
    if not isinstance(fn, torch.nn.Module):
        return
    modules = dict(fn.named_modules())
    for prefix, module_state in state.items():
        module = modules.get(prefix)
        if module is None:
            continue
        if "own" in module_state:
            module.load_running_state(module_state["own"])
            continue
        for name, value in module_state["states"].items():
            current = getattr(module, name, None)
            device = current.device if isinstance(current, torch.Tensor) else _device_of(module)
            moved = [item.to(device) for item in value] if isinstance(value, list) else value.to(device)
            if name in module._buffers:
                module._buffers[name] = moved
            else:
                setattr(module, name, moved)
        for name, count in module_state["counters"].items():
            module.__dict__[name] = int(count)
        if "_computed" in module.__dict__:
            module.__dict__["_computed"] = None  # torchmetrics' cached result is of another state


def _declared_states(module: torch.nn.Module) -> list[str]:
    defaults = getattr(module, "_defaults", None)
    return [name for name in defaults if isinstance(name, str)] if isinstance(defaults, Mapping) else []


def _device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's states live: its first tensor state's device (the CPU without one)."""
    for name in _declared_states(module):
        value = getattr(module, name, None)
        if isinstance(value, torch.Tensor):
            return value.device
    return next((buffer.device for buffer in module.buffers()), torch.device("cpu"))


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
        """The running state (copies): each module's state dict and the rest of its running state (see
        `running_state`), the tracked means and the call count."""
        modules = {name: fn for name, fn in self.fns.items() if isinstance(fn, torch.nn.Module)}
        fns = {name: _cloned(fn.state_dict()) for name, fn in modules.items()}  # first: it adds what waits
        return {
            "fns": fns,
            "running": {name: running_state(fn) for name, fn in modules.items()},
            "tracker": _cloned(self.tracker.state_dict()),
            "calls": self.calls,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()` (states of callables this object does not have are skipped)."""
        running = state.get("running", {})  # a checkpoint of format 2 before it has none
        for name, fn_state in state.get("fns", {}).items():
            fn = self.fns.get(name)
            if isinstance(fn, torch.nn.Module):
                fn.load_state_dict(fn_state)
                load_running_state(fn, running.get(name, {}))
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
        self.keep_last = False  # set once a custom step's values are believed: they are compared with `last`
        self.last: torch.Tensor | None = None  # with `keep_last`, the total of the last call, without its graph

    def __call__(self, y: Any, label: Any) -> torch.Tensor:
        """The total loss of a batch (a scalar with its graph); updates every part's epoch value."""
        n = 0 if self.all_stateful else count_samples(y, label)
        total: torch.Tensor | None = None
        for name, fn in self.fns.items():
            try:
                value = fn(y, label)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
                raise LossError(
                    failure_message(
                        f"Loss `{name}` failed on model output {describe(y)} and label {describe(label)}",
                        error,
                        "Check that the model output and the label fit this loss (shapes, dtypes, `target` keys).",
                        f"y={describe(y)}, label={describe(label)}",
                    )
                ) from error
            if not isinstance(value, torch.Tensor):
                raise LossError(
                    f"Loss `{name}` must return a scalar tensor (reduce it, e.g. with `.mean()`). "
                    f"Received: {type(value).__name__}"
                )
            if value.dim():  # a 0-dim value, the common case, is checked by this one call
                if value.numel() != 1:
                    raise LossError(
                        f"Loss `{name}` must return a scalar tensor (reduce it, e.g. with `.mean()`). "
                        f"Received: shape {tuple(value.shape)}"
                    )
                value = value.reshape(())
            if not self.stateful[name]:
                self.tracker.update(name, value, n)
            total = value if total is None else summable(total) + value
        assert total is not None  # at least one part, checked by `check_loss_fn`
        if self.is_dict and not self.all_stateful:
            self.tracker.update("loss", total, n)
        self.calls += 1
        if self.keep_last:
            self.last = total.detach()
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
        self._direct = {training: self._direct_counting(training) for training in (True, False)}

    def _direct_counting(self, training: bool) -> list[tuple[str, Callable[[Any, Any], None]]] | None:
        """Each metric's `update_state`, when every metric of the pass counts a batch itself and keeps no graph in
        its state (ours: `keeps_no_graph`), so outputs that require grad need no `no_grad` (decided once)."""
        names = self.owned(training)
        if not all(self.counting[name] and getattr(self.fns[name], "keeps_no_graph", False) is True for name in names):
            return None
        return [(name, self.fns[name].update_state) for name in names]  # type: ignore[attr-defined]

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

        A metric with its own `update_state` (ours) counts directly, adding what a call adds; any
        other is called as usual.
        """
        direct = self._direct[training]
        if direct is None:
            if isinstance(y, torch.Tensor) and not y.requires_grad:
                self._update(y, label, training, False)
            else:
                with torch.no_grad():
                    self._update(y, label, training, False)
            return
        for name, count in direct:
            try:
                count(y, label)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
                raise self._failure(name, y, label, error) from error
        self.calls += 1

    @staticmethod
    def _failure(name: str, y: Any, label: Any, error: Exception) -> MetricError:
        return MetricError(
            name,
            failure_message(
                f"Metric `{name}` failed on model output {describe(y)} and label {describe(label)}",
                error,
                "Check that the model output and the label fit this metric.",
                f"y={describe(y)}, label={describe(label)}",
            ),
        )

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
                raise self._failure(name, y, label, error) from error
            value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
            if not self.stateful[name]:
                self.tracker.update(name, value, n)
            values[name] = value
        self.calls += 1
        return values

    def epoch_values(self, training: bool) -> dict[str, torch.Tensor]:
        """Each metric's epoch value since `reset()`, as tensors."""
        return {name: self._value(name) for name in self.owned(training)} if self.calls else {}
