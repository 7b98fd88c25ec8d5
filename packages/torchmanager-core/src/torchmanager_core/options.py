"""A manager's checked options: attributes that validate what is assigned to them (in `__init__` or later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = ["Option"]

T = TypeVar("T")


class Option(Generic[T]):
    """An attribute whose assignments pass through `check(value, name)` (which raises on a bad value).

    Args:
        check: Returns the value to keep, or raises naming the option.
        doc: What the option is (shown by `help`).
    """

    def __init__(self, check: Callable[[Any, str], T], doc: str) -> None:
        self.check = check
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Option[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> T | Option[T]:
        if instance is None:
            return self
        return instance.__dict__[self.name]  # type: ignore[no-any-return]

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__[self.name] = self.check(value, self.name)
