"""How a call of a metric reaches its `update`: directly, or inside `nn.Module.__call__` when hooks are set.

Who owns what: `metric.Metric` decides its route when a hook is registered on it or removed (not
on every call) and calls `run_hooked` on the hooked route; this module holds the pieces of that
route: the `forward` a hooked metric holds, and the hook handle that makes it decide again on removal.
torch's global module hooks (`torch.nn.modules.module.register_module_*_hook`) have no
registration event to decide on: a metric reads their four registries on each call, as
`nn.Module.__call__` does for every module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch.nn.modules import module as _torch_module
from torch.utils.hooks import RemovableHandle

__all__ = ["GLOBAL_MODULE_HOOKS", "HookHandle", "HookedForward", "has_own_hooks", "run_hooked"]

GLOBAL_MODULE_HOOKS = (
    _torch_module._global_forward_pre_hooks,
    _torch_module._global_forward_hooks,
    _torch_module._global_backward_pre_hooks,
    _torch_module._global_backward_hooks,
)
"""torch's four registries of global module hooks (dicts torch fills and empties in place): `any(...)` of them
says whether a global hook is set now."""


class Routed(Protocol):
    """What the route needs of a metric: its `update` and its decision."""

    def update(self, input: Any, target: Any) -> torch.Tensor: ...

    def _decide_route(self) -> None: ...


def has_own_hooks(module: torch.nn.Module) -> bool:
    """Whether a forward or backward hook (or pre-hook) is registered on `module` itself."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


class HookedForward:
    """The `forward` a hooked metric holds in its instance dict (set when its route is decided).

    `nn.Module.__call__` fires the hooks around `self.forward`: armed by the metric's own call
    (`run_hooked`), this runs `update` once (whose own `self.forward` calls then reach the class's
    `forward`, as this disarms first); unarmed, it is the class's `forward`.
    """

    __slots__ = ("armed", "metric")

    def __init__(self, metric: torch.nn.Module) -> None:
        self.metric = metric
        self.armed = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        metric = self.metric
        if self.armed:
            self.armed = False
            return metric.update(*args, **kwargs)  # type: ignore[operator]
        return type(metric).forward(metric, *args, **kwargs)


def run_hooked(metric: torch.nn.Module, input: Any, target: Any) -> torch.Tensor:
    """`metric.update(input, target)` run by `nn.Module.__call__`, so that every hook (its own, the global ones)
    fires around it as around a module's `forward`."""
    route = metric.__dict__.get("forward")
    if not isinstance(route, HookedForward):  # only a global hook is set: the route is made once, here
        route = metric.__dict__["forward"] = HookedForward(metric)
    route.armed = True
    try:
        value: torch.Tensor = torch.nn.Module.__call__(metric, input, target)
    finally:
        route.armed = False  # a pre-hook that raised left it armed
    return value


def set_route(metric: torch.nn.Module, hooked: bool) -> None:
    """Give `metric` the route its hooks need: the hooked `forward` while it has hooks of its own, none after."""
    metric.__dict__["_hooked"] = hooked
    if hooked and not isinstance(metric.__dict__.get("forward"), HookedForward):
        metric.__dict__["forward"] = HookedForward(metric)
    elif not hooked and isinstance(metric.__dict__.get("forward"), HookedForward):
        del metric.__dict__["forward"]


class HookHandle(RemovableHandle):
    """torch's handle of a hook registered on a metric; removing it makes the metric decide its route again."""

    def __init__(self, handle: RemovableHandle, metric: Routed) -> None:
        self.hooks_dict_ref = handle.hooks_dict_ref
        self.id = handle.id
        self.extra_dict_ref = handle.extra_dict_ref
        self._metric: Callable[[], Routed | None] = weakref.ref(metric)

    def remove(self) -> None:
        super().remove()
        metric = getattr(self, "_metric", lambda: None)()  # an unpickled handle has no metric to tell
        if metric is not None:
            metric._decide_route()
