"""The fields of a configs class (its annotations), checking values read from files against them,
and turning values into plain YAML/JSON-safe data.

Who owns what: this module knows types; `files.py` reads files and their `extends:` chain;
`base.py` and `basic.py` build configs objects from what both give.
"""

from __future__ import annotations

import enum
import inspect
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union

from ..errors import ConfigsFormatError

__all__ = ["ConfigsFormatError", "config_fields", "conform", "to_plain", "type_name"]


class _Mismatch(Exception):
    """Internal: a value does not match an annotation."""


def config_fields(cls: type) -> dict[str, Any]:
    """The annotated fields of `cls` and its bases, name to annotation (ClassVar and `_private` left out).

    An annotation that cannot be resolved (a forward reference to a name not in scope, as in a
    class defined inside a function) is kept as its string, which `conform` accepts any value
    for; the other annotations of the class are still resolved and checked.
    """
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        for name, hint in inspect.get_annotations(base).items():
            hints[name] = _resolve(hint, base)
    return {
        name: hint
        for name, hint in hints.items()
        if not name.startswith("_")
        and hint is not ClassVar
        and typing.get_origin(hint) is not ClassVar
        and not (isinstance(hint, str) and hint.split("[")[0].split(".")[-1] == "ClassVar")
    }


def _resolve(hint: Any, owner: type) -> Any:
    """A string annotation of `owner` evaluated as `typing.get_type_hints` does, else the string."""
    if not isinstance(hint, str):
        return hint
    holder = type("_Holder", (), {"__annotations__": {"x": hint}, "__module__": owner.__module__})
    try:
        return typing.get_type_hints(holder, localns=dict(vars(owner)))["x"]
    except Exception:  # a name not in scope: leave the field unchecked
        return hint


def type_name(annotation: Any) -> str:
    """A readable name for an annotation: `int`, `list[float]`, `str | None`."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "").replace("NoneType", "None")


def conform(value: Any, annotation: Any, *, key: str, source: str, cfg_type: type) -> Any:
    """Check a value read from a config file against its field's annotation and return it.

    Checked: `int`, `float` (an int is accepted and made a float), `str`, `bool` (never 0/1),
    `None`, `list[...]`, `tuple[...]`, `dict[..., ...]`, `Literal[...]`, unions and `Optional`.
    Values for other annotations (`torch.device`, a `Path`, ...) are passed as read, for
    `format_arguments` to convert.

    Raises:
        ConfigsFormatError: The value does not match, naming the key, the file and the expected type.
    """
    try:
        return _conform(value, annotation)
    except _Mismatch:
        raise ConfigsFormatError(
            cfg_type,
            f"Config key `{key}` in '{source}' must be of type {type_name(annotation)}. Received: {key}={value!r}",
        ) from None


def _conform(value: Any, annotation: Any) -> Any:
    if annotation is Any or isinstance(annotation, str):
        return value
    if annotation is None or annotation is type(None):
        return _expect(value is None, value)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        for arg in args:
            try:
                return _conform(value, arg)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        return _expect(any(value == arg and type(value) is type(arg) for arg in args), value)
    if origin is list or annotation is list:
        _expect(isinstance(value, list | tuple), value)
        return [_conform(item, args[0] if args else Any) for item in value]
    if origin is tuple or annotation is tuple:
        _expect(isinstance(value, list | tuple), value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_conform(item, args[0] if args else Any) for item in value)
        _expect(len(value) == len(args), value)
        return tuple(_conform(item, arg) for item, arg in zip(value, args))
    if origin is dict or annotation is dict:
        _expect(isinstance(value, dict), value)
        key_type, value_type = args if args else (Any, Any)
        return {_conform(k, key_type): _conform(v, value_type) for k, v in value.items()}
    if annotation is bool:
        return _expect(isinstance(value, bool), value)
    if annotation is int:
        return _expect(isinstance(value, int) and not isinstance(value, bool), value)
    if annotation is float:
        _expect(isinstance(value, int | float) and not isinstance(value, bool), value)
        return float(value)
    if annotation is str:
        return _expect(isinstance(value, str), value)
    return value


def _expect(condition: bool, value: Any) -> Any:
    if not condition:
        raise _Mismatch
    return value


def to_plain(value: Any) -> Any:
    """`value` as plain data that `yaml.safe_dump` and `json.dump` write: None, bool, int, float,
    str, lists and str-keyed dicts. Tuples and sets become lists, enums their value, paths
    strings, and any other object (a `torch.device`, a dtype) its `str`.
    """
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if value is None:
        return None
    for plain in (bool, int, float, str):  # subclasses (numpy floats, str enums) as the plain type
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(item) for item in value]
    return str(value)
