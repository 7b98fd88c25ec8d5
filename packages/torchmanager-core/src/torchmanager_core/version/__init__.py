"""Versions: the package version, the manager API version, and a `deprecated` decorator keyed on them.

Names follow upstream torchmanager 1.5 (`torchmanager_core.version`: `Version`, `CURRENT`, `API`,
`DESCRIPTION`, `deprecated`, `VersionError`; `torchmanager_core.VERSION`/`API_VERSION`); its submodules
(`.version`, `.details`, `.deprecation`, `.errors`) re-export them under upstream's paths.
`warn_upstream_name` is how a name kept only for upstream's code says, once, what replaces it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from packaging.version import InvalidVersion
from packaging.version import Version as _PackagingVersion

from ..__about__ import __version__

__all__ = [
    "API",
    "API_VERSION",
    "CURRENT",
    "DESCRIPTION",
    "VERSION",
    "PreRelease",
    "Version",
    "VersionError",
    "VersionType",
    "deprecated",
    "warn_upstream_name",
]

_F = TypeVar("_F", bound=Callable[..., Any])


@functools.total_ordering
class PreRelease(Enum):
    """The kind of a pre-release, ordered alpha < beta < release candidate (`UNKNOWN` is not ordered)."""

    ALPHA = "a"
    BETA = "b"
    RELEASE_CANDIDATE = "rc"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> PreRelease:
        return cls.UNKNOWN

    def __lt__(self, other: Any) -> bool:
        order = (PreRelease.ALPHA, PreRelease.BETA, PreRelease.RELEASE_CANDIDATE)
        other = other if isinstance(other, PreRelease) else PreRelease(other)
        if self not in order or other not in order:
            return NotImplemented
        return order.index(self) < order.index(other)


class Version(_PackagingVersion):
    """A PEP 440 version ("v1.5" and "1.5" are equal) that also compares with strings, as upstream's did."""

    def __init__(self, version: Any, /) -> None:
        try:
            super().__init__(str(version))
        except InvalidVersion as error:
            raise ValueError(
                f"`version` must be a PEP 440 version such as '1.5' or 'v2.0.0a0'. Received: version={version!r}"
            ) from error

    @property
    def main_version(self) -> int:
        """The major number."""
        return self.major

    @property
    def minor_version(self) -> int:
        """The minor number."""
        return self.minor

    @property
    def sub_version(self) -> int:
        """The micro number (0 when absent)."""
        return self.micro

    @property
    def pre_release(self) -> PreRelease | None:
        """The kind of pre-release ("2.0a1": `PreRelease.ALPHA`), or None for a release."""
        return None if self.pre is None else PreRelease(self.pre[0])

    @property
    def pre_release_version(self) -> int:
        """The pre-release number ("2.0a1": 1), 0 for a release."""
        return 0 if self.pre is None else self.pre[1]

    @staticmethod
    def _coerce(other: Any) -> _PackagingVersion | None:
        if isinstance(other, _PackagingVersion):
            return other
        if isinstance(other, str):
            return Version(other)
        return None

    def __eq__(self, other: object) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else super().__eq__(coerced)

    def __lt__(self, other: Any) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else super().__lt__(coerced)

    def __le__(self, other: Any) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else super().__le__(coerced)

    def __gt__(self, other: Any) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else super().__gt__(coerced)

    def __ge__(self, other: Any) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else super().__ge__(coerced)

    __hash__ = _PackagingVersion.__hash__


VersionType = str | Version
"""A version given as a string ("v1.5") or a `Version`."""

VERSION: Version = Version(__version__)
"""This torchmanager's version."""

CURRENT: Version = VERSION
"""Upstream's name for `VERSION`."""

API_VERSION: Version = Version(f"{VERSION.major}.{VERSION.minor}")
"""Version of the manager API (major.minor): objects saved with an older one may need converting."""

API: Version = API_VERSION
"""Upstream's name for `API_VERSION`."""

DESCRIPTION: str = f"PyTorch Training/Testing Manager {VERSION}"


class VersionError(SystemError):
    """A deprecated function was called in a version that has removed it."""

    def __init__(self, method_name: str, maximum_supported_version: str, current_version: Version = VERSION) -> None:
        super().__init__(
            f"`{method_name}` was removed in version {maximum_supported_version}; use its replacement. "
            f"Received: current_version={current_version}"
        )


def deprecated(
    target_version: str | Version,
    removing_version: str | Version | None = None,
    *,
    current_version: str | Version = VERSION,
) -> Callable[[_F], _F]:
    """Decorate a function deprecated from `target_version` and removed from `removing_version`.

    Calls warn `PendingDeprecationWarning` before `target_version`, `DeprecationWarning` from it, and
    raise `VersionError` from `removing_version` on.
    """
    target, current = Version(target_version), Version(current_version)
    removing = None if removing_version is None else Version(removing_version)
    until = "a future version" if removing is None else str(removing)

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if removing is not None and current >= removing:
                raise VersionError(fn.__qualname__, str(removing), current)
            if current < target:
                message = f"`{fn.__qualname__}` will be deprecated from {target} and removed in {until}."
                warnings.warn(message, PendingDeprecationWarning, stacklevel=2)
            else:
                message = f"`{fn.__qualname__}` is deprecated since {target} and will be removed in {until}."
                warnings.warn(message, DeprecationWarning, stacklevel=2)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


_warned_names: set[str] = set()


def warn_upstream_name(name: str, replacement: str, *, stacklevel: int = 3) -> None:
    """Warn once per process that `name` is kept only for code written for upstream torchmanager 1.5.

    The `DeprecationWarning` names the replacement; the name itself keeps working. `stacklevel` 3
    points at the code that called the function which calls this one.
    """
    if name in _warned_names:
        return
    _warned_names.add(name)
    message = f"`{name}` is kept for code written for torchmanager 1.5; use {replacement} instead."
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)
