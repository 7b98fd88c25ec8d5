"""Register a gradient hook, or a gradient clip, on every trainable parameter of a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, overload

import torch

from .protocols import Removable

__all__ = ["add_grad_clip", "backward_hook"]

GradHook = Callable[[torch.Tensor], torch.Tensor | None]


def add_grad_clip(
    model: torch.nn.Module, /, min_value: float, max_value: float, *, replace_nan: bool = False
) -> list[Removable]:
    """Clamp every gradient of `model`'s trainable parameters to [`min_value`, `max_value`] as it is computed.

    Args:
        model: The model whose parameters get the hook.
        min_value: Lower bound of each gradient element.
        max_value: Upper bound of each gradient element.
        replace_nan: Also replace NaN gradient elements by 0.
    Returns:
        One handle per parameter; `handle.remove()` takes the clip off.
    Raises:
        ValueError: `min_value` is greater than `max_value`.
    """
    if min_value > max_value:
        raise ValueError(
            f"`min_value` must not exceed `max_value`. Received: min_value={min_value}, max_value={max_value}"
        )

    def clip(grad: torch.Tensor) -> torch.Tensor:
        clipped = grad.clamp(min_value, max_value)
        return clipped.nan_to_num(0.0, posinf=max_value, neginf=min_value) if replace_nan else clipped

    return backward_hook(model, clip, as_decorator=False)


@overload
def backward_hook(
    model: torch.nn.Module, /, hook: None = None, *, as_decorator: bool = True
) -> Callable[[GradHook], GradHook]: ...


@overload
def backward_hook(model: torch.nn.Module, /, hook: GradHook, *, as_decorator: Literal[True] = True) -> GradHook: ...


@overload
def backward_hook(model: torch.nn.Module, /, hook: GradHook, *, as_decorator: Literal[False]) -> list[Removable]: ...


def backward_hook(
    model: torch.nn.Module, /, hook: GradHook | None = None, *, as_decorator: bool = True
) -> GradHook | list[Removable] | Callable[[GradHook], GradHook]:
    """Register `hook(grad) -> grad or None` on every trainable parameter of `model`.

    `@backward_hook(model)` decorates a hook function and returns it; `backward_hook(model, hook,
    as_decorator=False)` returns the handles instead.
    """
    if hook is None:

        def decorate(fn: GradHook) -> GradHook:
            return backward_hook(model, fn, as_decorator=True)

        return decorate
    handles: list[Removable] = [
        p.register_hook(hook)  # type: ignore[no-untyped-call]
        for p in model.parameters()
        if p.requires_grad
    ]
    return hook if as_decorator else handles
