"""The `Metric` base class: batch values stream into state tensors kept on the metric's device.

Who owns what: this module owns the state machinery (declaration, accumulation, reset,
merging, `state_dict`) and the call protocol (target selection, hooks, which methods a
subclass may replace); each concrete metric module only says how a batch updates its state
and how the state becomes a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from .attributes import assignable, register_unshadowed
from .call_route import GLOBAL_MODULE_HOOKS, HookHandle, has_own_hooks, run_hooked, set_route
from .waiting import PENDING_BATCHES, Waiting

__all__ = [
    "GLOBAL_MODULE_HOOKS",
    "PENDING_BATCHES",
    "BaseMetric",
    "Metric",
    "MetricFn",
    "Reduction",
    "at_least_float32",
    "batch_size",
    "metric",
    "metric_fn",
    "overrides",
]

MetricFn = Callable[[Any, Any], torch.Tensor]
"""A function of `(input, target)` returning a metric tensor."""

Reduction = Literal["sum", "max", "min", "cat"]
"""How a state combines across batches and processes: sums, extremes, or concatenation."""

_REDUCTIONS = ("sum", "max", "min", "cat")


def batch_size(input: Any, target: Any) -> int:
    """The number of samples in a batch: the first dimension of the label, else of the input.

    Dicts, lists and tuples are searched for their first tensor; a batch without tensors or
    with 0-dim tensors only counts as one sample.
    """
    for value in (target, input):
        tensor = _first_tensor(value)
        if tensor is not None and tensor.dim() > 0:
            return int(tensor.shape[0])
    return 1


# torch's registries of global module hooks, named here to be read as fast as `nn.Module.__call__` reads them
_GLOBAL_FORWARD_PRE, _GLOBAL_FORWARD, _GLOBAL_BACKWARD_PRE, _GLOBAL_BACKWARD = GLOBAL_MODULE_HOOKS

_NARROW_FLOATS = frozenset((torch.bfloat16, torch.float16))
"""The autocast dtypes: too narrow to compute or sum a metric in."""


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` as float32 when it is bfloat16 or float16 (autocast's dtypes), else `x` itself.

    Metrics and losses compute in float32 or wider whatever the model's precision: a bfloat16
    sum stops growing at 256 and a float16 one overflows past 65504. Widening keeps the
    gradient (autocast does the same for torch's losses on CUDA). What is not a tensor is
    returned as it is, for the caller's own input check to report.
    """
    return x.float() if isinstance(x, torch.Tensor) and x.dtype in _NARROW_FLOATS else x


def overrides(obj: object, base: type, name: str) -> bool:
    """Whether `type(obj)` replaces `base`'s attribute `name` (a method a fast path stands in for).

    Classes whose `update` computes the state without calling `forward` check this once, in
    `__init__`, so that a subclass's `forward` is still the one that counts.
    """
    return getattr(type(obj), name) is not getattr(base, name)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class Metric(torch.nn.Module):
    """A streaming metric: call it on each batch, read `result` at the end of the epoch.

    `metric(input, target)` picks the `target` entry of dict inputs and labels, computes the batch
    value with `forward` and adds it to the state. By default the state is a sample-weighted
    running mean (`total`, `count`), so `result` is exact over uneven batches; a metric whose
    batch value averages something else (elements, tokens, pixels, the labels a loss did not
    ignore) weighs each batch by that, so its epoch value is the one of all the data at once.
    Metrics whose epoch value is not a mean (confusion matrices, FID) declare their own state
    with `add_state` and override `update` and `compute`. States live on the device of the data
    they accumulate, are reset by `reset()`, saved in `state_dict()` and merged with
    `merge_state` (or reduced across processes) by their declared reduction. Nothing in an
    update waits for the device. Sums are kept in float32 or wider and sample counts in int64,
    whatever the dtype of the values.

    Extension points: `forward` (the batch value), `update` (how a batch changes the state, the
    method every call runs, whichever loop calls it) and `compute`. A subclass's `forward` is
    always the one that counts: where a metric here computes its state without calling
    `forward` (pooled counts), a subclass replacing `forward` makes it a sample-weighted mean of
    that `forward`'s values. Hooks registered on the module (`register_forward_hook`,
    `register_forward_pre_hook`, the backward hooks, and torch's global module hooks) fire around
    each call's update, as `nn.Module.__call__` fires them around `forward`: pre-hooks see
    `(input, target)` after the `target` key is picked and may replace them (the state then
    records the replacement), forward hooks see the batch value and may replace what the call
    returns (the state has already recorded the batch). Whether a call goes through the hooks is
    decided when a hook is registered on the metric or removed (see `call_route`), not per call.

    Args:
        metric_fn: Optional function of `(input, target)` giving the batch value; without it, a
            subclass overrides `forward`.
        target: Optional key picking one entry of dict model outputs and dict labels.
    """

    total: torch.Tensor
    count: torch.Tensor
    _hooked = False  # the instance's own decision, taken when a hook is registered on it or removed

    keeps_no_graph = True
    """Whether the state never keeps a tensor's graph (values are added detached), so a loop may update it
    with outputs that require grad and no `torch.no_grad()`. Decided per class: a class defined outside
    torchmanager that replaces how a batch is added or valued (`update`, `update_state`, `__call__`, `forward`), or
    an instance made with a `metric_fn`, is not trusted with it (its code then runs under `no_grad`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ours = cls.__module__.split(".")[0] in ("torchmanager_metrics", "torchmanager_losses")
        if not ours and "keeps_no_graph" not in cls.__dict__ and any(name in cls.__dict__ for name in _ADDING):
            cls.keeps_no_graph = False

    def __init__(self, metric_fn: MetricFn | None = None, target: str | None = None) -> None:
        super().__init__()
        if metric_fn is not None and not callable(metric_fn):
            raise TypeError(f"`metric_fn` must be callable as fn(input, target). Received: metric_fn={metric_fn!r}")
        if target is not None and not isinstance(target, str):
            raise TypeError(
                f"`target` must be a key (str) of the model's output dict, or None. Received: target={target!r}"
            )
        self._metric_fn = metric_fn
        if metric_fn is not None:  # the user's code makes the batch value: it runs under `no_grad` in a loop
            self.keeps_no_graph = False
        self._target = target
        self._reductions: dict[str, Reduction] = {}
        self._defaults: dict[str, torch.Tensor] = {}
        self._num_updates = 0  # batches added to `total` since the last reset (not those waiting)
        self._waiting = Waiting()  # batches counted and not yet added to `total` and `count`
        self.add_state("total", torch.zeros(()), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), "sum")  # exact beyond float32's 2**24

    @assignable
    def target(self) -> str | None:
        """The key picked from dict outputs and labels, or `None` to use them whole.

        A subclass may assign `self.target` for its own use, as upstream 1.5's could (there the
        name was free): the value assigned is read back, and the key picked stays `_target`
        (upstream's attribute for it, which a subclass may assign to change the key).
        """
        return self._target

    @property
    def result(self) -> torch.Tensor:
        """The epoch value over all batches since the last `reset()` (NaN before any)."""
        return self.compute()

    @property
    def reductions(self) -> dict[str, Reduction]:
        """Each state's name and how it combines across batches and processes."""
        return dict(self._reductions)

    def add_state(self, name: str, default: torch.Tensor, reduction: Reduction = "sum") -> None:
        """Declare a state tensor, reset to a copy of `default` by `reset()`.

        A "cat" state is a 1-element-per-batch concatenation along dim 0 (memory grows with the
        data): use it only where no constant-size statistic exists.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {_REDUCTIONS}. Received: reduction={reduction!r}")
        if not isinstance(default, torch.Tensor):
            raise TypeError(f"A state's default must be a tensor. Received: {name}={default!r}")
        self._reductions[name] = reduction
        self._defaults[name] = default.detach().clone()
        self.register_buffer(name, default.detach().clone())

    def __call__(self, input: Any, target: Any = None) -> torch.Tensor:
        """Update the state with one batch and return the batch value (hooks fire around the update)."""
        if self._target is not None:
            input, target = self._select(input, "model output"), self._select(target, "label")
        # `_run_update` inlined (a call on a Module costs microseconds on every batch); `_hooked` was decided when
        # a hook was registered here, torch's global registries have no such moment (`nn.Module.__call__` reads them)
        if self._hooked or _GLOBAL_FORWARD_PRE or _GLOBAL_FORWARD or _GLOBAL_BACKWARD_PRE or _GLOBAL_BACKWARD:
            return run_hooked(self, input, target)
        return self.update(input, target)

    @property
    def hooked(self) -> bool:
        """Whether a hook is registered on this metric or globally (then calls run `nn.Module.__call__`)."""
        return bool(self._hooked or _GLOBAL_FORWARD_PRE or _GLOBAL_FORWARD or _GLOBAL_BACKWARD_PRE or _GLOBAL_BACKWARD)

    def _run_update(self, input: Any, target: Any) -> torch.Tensor:
        """`update`, inside `nn.Module.__call__` when a hook is set on this module or globally (so it fires).

        Subclasses that prepare the batch before the update (the feature metrics) call it too.
        """
        if self._hooked or _GLOBAL_FORWARD_PRE or _GLOBAL_FORWARD or _GLOBAL_BACKWARD_PRE or _GLOBAL_BACKWARD:
            return run_hooked(self, input, target)
        return self.update(input, target)  # no hook anywhere: nn.Module.__call__ would only add its cost

    def _decide_route(self) -> None:
        """Decide how calls reach `update`: inside `nn.Module.__call__` while hooks are registered on this metric."""
        set_route(self, has_own_hooks(self))

    def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        """As `nn.Module.register_buffer`; a name the class computes until assigned (`target`) may be registered."""
        register_unshadowed(self, name, lambda: super(Metric, self).register_buffer(name, tensor, persistent))

    def register_parameter(self, name: str, param: torch.nn.Parameter | None) -> None:
        """As `nn.Module.register_parameter`; a name the class computes until assigned (`target`) may be registered."""
        register_unshadowed(self, name, lambda: super(Metric, self).register_parameter(name, param))

    # Registering a hook decides the metric's route; removing it (its handle) decides again.

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        """As `nn.Module.register_forward_pre_hook`; the hook fires before each call's update."""
        return self._routed(super().register_forward_pre_hook(*args, **kwargs))

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        """As `nn.Module.register_forward_hook`; the hook sees each call's batch value."""
        return self._routed(super().register_forward_hook(*args, **kwargs))

    def register_full_backward_pre_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        """As `nn.Module.register_full_backward_pre_hook`."""
        return self._routed(super().register_full_backward_pre_hook(*args, **kwargs))

    def register_full_backward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        """As `nn.Module.register_full_backward_hook`."""
        return self._routed(super().register_full_backward_hook(*args, **kwargs))

    def register_backward_hook(self, *args: Any, **kwargs: Any) -> RemovableHandle:
        """As `nn.Module.register_backward_hook` (deprecated by torch)."""
        return self._routed(super().register_backward_hook(*args, **kwargs))

    def _routed(self, handle: RemovableHandle) -> RemovableHandle:
        self._decide_route()
        return HookHandle(handle, self)

    def forward(self, input: Any, target: Any) -> torch.Tensor:
        """The batch value, without touching the state. Override it, or pass `metric_fn`."""
        if self._metric_fn is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no `metric_fn`: pass one to the constructor or override `forward`."
            )
        return self._metric_fn(input, target)

    def update(self, input: Any, target: Any) -> torch.Tensor:
        """Add one batch to the state and return its value (the hook that `__call__` runs)."""
        value = self.forward(input, target)
        self.accumulate(value, self.denominator(input, target))
        return value

    def denominator(self, input: Any, target: Any) -> int | torch.Tensor:
        """The batch value's weight in the epoch mean: what `forward`'s mean divides by.

        By default the number of samples (the first dimension of the label, else of the input),
        right for a value that averages one number per sample; a metric averaging elements
        (tokens, pixels) overrides it, so the epoch value is the one of all the data at once.
        """
        return batch_size(input, target)

    def update_state(self, input: Any, target: Any = None) -> None:
        """Add one batch to the state without returning its value (a loop that never reads it calls this).

        It adds exactly what a call adds (the epoch value never depends on which of the two a loop
        used): by default it calls the metric, so hooks and every override run; a metric whose
        batch value costs a kernel the state does not need (the accuracy family) skips making it.
        """
        self(input, target)

    def accumulate(self, value: torch.Tensor | float, n: int | torch.Tensor = 1) -> None:
        """Add a batch mean `value` over `n` samples to the running mean, on `value`'s device.

        An empty batch (`n == 0`) is skipped: its mean is NaN and would poison the epoch value.
        `n` may be a 0-dim tensor on `value`'s device (not requiring grad), counted without waiting
        for it (see `accumulate_sum`); a batch whose tensor `n` is 0 cannot be skipped then, so its
        mean must be finite (`accumulate_sum` of the batch's sum has no such case).
        """
        if isinstance(n, torch.Tensor):
            value = self._summable(value)
            self._total_like(value).addcmul_(value, n)
            self._buffers["count"].add_(n)  # type: ignore[union-attr]
            self.__dict__["_num_updates"] = self._num_updates + 1
            return
        if n == 0:
            return
        value = self._summable(value)
        self._total_like(value).add_(value, alpha=n)
        self._waiting.samples += n
        self.__dict__["_num_updates"] = self._num_updates + 1

    def accumulate_sum(self, total: torch.Tensor, n: int | torch.Tensor) -> None:
        """Add the sum `total` of `n` samples' values to the running mean (`accumulate(total / n, n)`, exactly).

        An integer sum (a count of hits) is added into the float state as it is: no conversion first.
        `n` may be a 0-dim tensor on `total`'s device (not requiring grad), counted without waiting
        for it: a number of samples known only on the device (elements a loss did not ignore), or,
        for a `Loss` (whose `count` is a float), a total weight. A batch whose `n` is 0 then adds
        nothing either way, as long as its `total` is 0.
        """
        if not isinstance(n, torch.Tensor) and n == 0:
            return
        if total.dtype in _NARROW_FLOATS:
            total = total.float()
        self._total_like(total).add_(total.data if total.requires_grad else total)  # `.data`: see `_summable`
        if isinstance(n, torch.Tensor):
            self._buffers["count"].add_(n)  # type: ignore[union-attr]
        else:
            self._waiting.samples += n
        self.__dict__["_num_updates"] = self._num_updates + 1

    def add_batch_sum(self, total: torch.Tensor, n: int | torch.Tensor) -> None:
        """`accumulate_sum(total, n)` for a 0-dim `total` that keeps no graph, added later without a kernel now.

        The batch's sum waits in a host-side list (see `waiting`); every `PENDING_BATCHES` batches
        since the last reset they are added in one go: a step pays a list append instead of
        in-place adds. Reads see them at once. `total` is a float32/float64 sum or an integer
        count; `n` a host int or a 0-dim tensor on `total`'s device (as `accumulate_sum`).
        """
        sums = self._waiting.sums
        sums.append((total, n))
        if len(sums) >= PENDING_BATCHES:
            self.materialize()

    def add_batch_mean(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        """`accumulate(value, weight)` for a 0-dim float32/float64 mean that keeps no graph and a 0-dim tensor
        `weight` on its device (a total class weight), added later as `add_batch_sum` is."""
        means = self._waiting.means
        means.append((value, weight))
        if len(means) >= PENDING_BATCHES:
            self.materialize()

    def _summable(self, value: torch.Tensor | float) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        if (
            value.requires_grad
        ):  # `.data`, not `.detach()`: the same values without autograd, read only, at half the cost
            value = value.data
        if value.dtype is not torch.float32 and value.dtype is not torch.float64:
            value = value.float()  # bfloat16/float16 sums stop growing or overflow; integers need a float mean
        return value

    def _total_like(self, value: torch.Tensor) -> torch.Tensor:
        """The `total` state, made for `value`'s device and shape (float32 or wider) at the first batch after a reset."""
        # buffers read from `_buffers` and counters set in `__dict__`: Module.__getattr__/__setattr__
        # cost microseconds a call
        buffers = self._buffers
        total = buffers["total"]
        if self._num_updates == 0 or total is None:
            dtype = value.dtype if value.dtype is torch.float64 else torch.float32
            total = buffers["total"] = torch.zeros(value.shape, dtype=dtype, device=value.device)
            buffers["count"] = torch.zeros((), dtype=self._defaults["count"].dtype, device=value.device)
        elif value.shape != total.shape:
            raise ValueError(
                f"{type(self).__name__} returned a value of shape {tuple(value.shape)} after values of shape "
                f"{tuple(total.shape)}: a metric's value must keep one shape between resets."
            )
        return total

    def materialize(self) -> None:
        """Add what waits on the host to the states (see `waiting`): the batches kept aside and the samples counted.

        Every `PENDING_BATCHES` batches, and before the state is merged, moved or reduced across
        processes. A subclass reading `self.total` or `self.count` directly calls it first (or reads
        `_current()`, which leaves the waiting batches where they are).
        """
        waiting = self._waiting
        if not waiting:
            return
        total, count, samples = waiting.totals()
        if total is not None:
            self._total_like(total).add_(total)
            self.__dict__["_num_updates"] = self._num_updates + waiting.batches
        state = self._buffers["count"]
        assert state is not None  # states are never unset
        if count is not None:
            state.add_(count if count.dtype is state.dtype or state.is_floating_point() else count.to(state.dtype))
        if samples:
            state.add_(samples)
        waiting.clear()

    def _current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`total` and `count` with what waits added, as `materialize` would add it, without changing the state."""
        total, count = self._buffers["total"], self._buffers["count"]
        assert total is not None and count is not None  # states are never unset
        if not self._waiting:
            return total, count
        add_total, add_count, samples = self._waiting.totals()
        if add_total is not None:
            if self._num_updates == 0:  # `materialize` would make the states for these values first
                dtype = add_total.dtype if add_total.dtype is torch.float64 else torch.float32
                total = torch.zeros(add_total.shape, dtype=dtype, device=add_total.device)
                count = torch.zeros((), dtype=count.dtype, device=add_total.device)
            total = total + add_total
        if add_count is not None:
            count = count + (
                add_count if add_count.dtype is count.dtype or count.is_floating_point() else add_count.to(count.dtype)
            )
        return total, count + samples if samples else count

    def compute(self) -> torch.Tensor:
        """The epoch value from the state: by default the sample-weighted mean (NaN when empty)."""
        total, count = self._current()
        mean = total / count
        return mean if mean.dtype is total.dtype else mean.to(total.dtype)  # a float64 count keeps the value's dtype

    def running_state(self) -> dict[str, Any]:
        """The states as they are and the batches waiting (copies), which `state_dict()` shows added together.

        Parking a pass, a checkpoint and a resume keep them apart (core's `compiled.running_state`),
        so the waiting batches are added at the same batch as in a run that was never interrupted.
        """
        total, count = self._buffers["total"], self._buffers["count"]
        assert total is not None and count is not None  # states are never unset
        return {
            "total": total.clone(),
            "count": count.clone(),
            "waiting": self._waiting.state(),
            "num_updates": self._num_updates,
        }

    def load_running_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `running_state()` (after `load_state_dict`, which it refines), on this metric's device."""
        device = self._buffers["count"].device  # type: ignore[union-attr]
        self._buffers["total"] = state["total"].to(device)
        self._buffers["count"] = state["count"].to(device)
        self._waiting.load(state["waiting"], device)
        self.__dict__["_num_updates"] = int(state["num_updates"])

    def reset(self) -> None:
        """Forget every batch: each state goes back to its default, on its current device."""
        buffers = self._buffers  # every state is a buffer (`add_state`); reached directly, as in `accumulate`
        for name, default in self._defaults.items():
            current = buffers[name]
            buffers[name] = default.to(current.device if current is not None else default.device).clone()
        self.__dict__["_num_updates"] = 0
        self._waiting.clear()

    def merge_state(self, other: Metric) -> None:
        """Fold another instance's state into this one, as if its batches had been seen here."""
        if type(other) is not type(self):
            raise TypeError(f"Cannot merge a {type(other).__name__} into a {type(self).__name__}.")
        self.materialize()
        other.materialize()
        for name, reduction in self._reductions.items():
            mine, theirs = getattr(self, name), getattr(other, name).to(getattr(self, name).device)
            if reduction == "cat":
                merged = torch.cat([mine, theirs])
            elif name in ("total", "count") and (self._num_updates == 0 or other._num_updates == 0):
                merged = theirs.clone() if self._num_updates == 0 else mine
            elif reduction == "sum":
                merged = mine + theirs
            elif reduction == "max":
                merged = torch.maximum(mine, theirs)
            else:
                merged = torch.minimum(mine, theirs)
            setattr(self, name, merged)
        self._num_updates += other._num_updates

    def _select(self, value: Any, what: str) -> Any:
        if self._target is None or not isinstance(value, Mapping):
            return value
        if self._target not in value:
            raise KeyError(
                f"{type(self).__name__}(target={self._target!r}) found no such key in the {what}. "
                f"Expected one of {sorted(map(str, value))}: fix `target` or the model's output dict."
            )
        return value[self._target]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Metric:
        self.materialize()  # what waits is on the old device: into the states first, which move
        return super()._apply(fn, recurse)  # type: ignore[no-any-return, no-untyped-call]

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._waiting:  # the state with the waiting batches added; the state itself stays as it is
            destination[prefix + "total"], destination[prefix + "count"] = self._current()

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a saved mean state has the shape of its values: adopt it before copying
        for name in self._defaults:
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.zeros_like(saved, device=getattr(self, name).device))
        self._waiting.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._num_updates = int(bool(self.count.ne(0).item()))  # whether any batch counted; not the hot path

    def extra_repr(self) -> str:
        return f"target={self._target!r}" if self._target is not None else ""


_ADDING = ("update", "update_state", "__call__", "forward")
"""The methods by which a batch is added to a metric's state."""

BaseMetric = Metric
"""Upstream 1.5's name of the abstract base; here the base and `Metric` are one class."""


class _FunctionMetric(Metric):
    """A metric made from a plain function by the `metric` and `metric_fn` decorators."""

    def __init__(self, fn: MetricFn, target: str | None = None) -> None:
        super().__init__(fn, target=target)
        self.__name__ = getattr(fn, "__name__", type(self).__name__)
        self.__doc__ = getattr(fn, "__doc__", None)

    @property
    def wrapped_metric_fn(self) -> MetricFn:
        """The decorated function (upstream's name; `torchmanager_core.protocols.WrappedFn` checks for it)."""
        assert self._metric_fn is not None  # set by the constructor
        return self._metric_fn

    @torch.no_grad()
    def forward(self, input: Any, target: Any) -> torch.Tensor:
        return super().forward(input, target)


def metric(fn: MetricFn) -> Metric:
    """Decorator turning `fn(input, target) -> Tensor` into a streaming `Metric`."""
    return _FunctionMetric(fn)


def metric_fn(target: str | None = None) -> Callable[[MetricFn], Metric]:
    """Decorator factory: like `metric`, picking `target` from dict outputs and labels."""

    def wrap(fn: MetricFn) -> Metric:
        return _FunctionMetric(fn, target=target)

    return wrap
