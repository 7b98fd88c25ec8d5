"""Attributes that subclasses written for upstream torchmanager 1.5 assign or read by upstream's names.

Upstream's metrics kept their settings in plain attributes (`self._dim`, `self.window`) and left
other names free (`target`): a subclass could assign any of them in its own `__init__`. Here
such a name is either an `assignable` value computed until an instance assigns its own, or an
`alias` of the attribute that holds the setting now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import torch

__all__ = ["alias", "assignable", "is_assigned", "register_unshadowed"]

T = TypeVar("T")


class assignable(Generic[T]):  # lower case: used as a decorator, like `property`
    """A read-only computed attribute that an instance may assign (a non-data descriptor).

    Reading it gives what the instance assigned (a plain value, or a module, parameter or buffer,
    which `torch.nn.Module` keeps in its registries), else the decorated function's value.
    """

    def __init__(self, default: Callable[[Any], T]) -> None:
        self.default = default
        self.name = default.__name__
        self.__doc__ = default.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> assignable[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T | assignable[T]:
        if obj is None:
            return self
        if isinstance(obj, torch.nn.Module):
            if vars(obj).get(_REGISTERING) == self.name:  # `register_unshadowed` asks torch whether the name is free
                raise AttributeError(self.name)
            for registry in (obj._parameters, obj._buffers, obj._modules):
                if self.name in registry:
                    return registry[self.name]  # type: ignore[return-value]
        return self.default(obj)


_REGISTERING = "_registering_assignable"


def register_unshadowed(module: torch.nn.Module, name: str, register: Callable[[], None]) -> None:
    """Run `register()` (torch's `register_parameter`/`register_buffer` for `name`) with an `assignable` of
    that name hidden: torch refuses to register a name the class already has (`self.window =
    torch.nn.Parameter(...)`, as upstream 1.5's SSIM wrote it, would raise `KeyError`)."""
    if not isinstance(getattr(type(module), name, None), assignable):
        register()
        return
    vars(module)[_REGISTERING] = name
    try:
        register()
    finally:
        del vars(module)[_REGISTERING]


def is_assigned(obj: torch.nn.Module, name: str) -> bool:
    """Whether `obj` assigned its own value to the `assignable` attribute `name`."""
    return name in vars(obj) or any(name in registry for registry in (obj._parameters, obj._buffers, obj._modules))


class alias:  # lower case, like `property`
    """Upstream 1.5's name of an attribute (`_dim` for `dim`): reading and assigning it reads and assigns `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__doc__ = f"Upstream 1.5's name of `{name}`."

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> alias: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.name)

    def __set__(self, obj: object, value: Any) -> None:
        setattr(obj, self.name, value)
